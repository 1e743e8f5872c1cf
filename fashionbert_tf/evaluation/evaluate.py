"""`run_evaluation`: the paper's evaluation (section 3.1, Table 1) of a checkpoint or SavedModel.

1. The model: the run's latest checkpoint (rebuilt from `<model_dir>/params.yaml`, restored with
   `tf.train.Checkpoint(model=...)`), a given checkpoint, or an exported SavedModel.
2. The pairs (`rank_at_k.py`): TIA pairs of both directions over the validation records, and the
   saved Rank@K candidate sets (image-to-text: an image against 101 texts; text-to-image: a text
   against 101 images).
3. Scoring (`pair_scoring.py`): all pairs in one pass over the validation TFRecords, each image's
   patch features computed once, texts tokenized once, variable-length batches; progress in pairs/s.
4. Metrics (`metrics.py`): TIA accuracy per direction, Rank@1/5/10 per direction (ties count
   against the ground truth).
5. Output: a table laid out like the paper's Table 1, `<output_dir>/results.json` (default
   `<model_dir>/eval/`), and the table as TensorBoard text (plus each number as a scalar);
   `<output_dir>/retrieval_scores.npz`, the scored Rank@K grids (`write_retrieval_scores`), which
   `gallery.py` draws.
"""

import io
import json
import os
import re

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.configs import data as data_config_lib
from fashionbert_tf.data import candidates as candidates_lib
from fashionbert_tf.data import pipeline
from fashionbert_tf.data import records
from fashionbert_tf.data import tokenization
from fashionbert_tf.evaluation import metrics
from fashionbert_tf.evaluation import pair_scoring
from fashionbert_tf.evaluation import pretraining_run
from fashionbert_tf.evaluation import rank_at_k
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.modeling import inference_precision
from fashionbert_tf.utils import inference_settings

RESULTS_FILE = "results.json"
RETRIEVAL_SCORES_FILE = "retrieval_scores.npz"
DIRECTION_TITLES = {"image_to_text": "Image-to-Text", "text_to_image": "Text-to-Image"}


def output_dir(config):
  return config.eval.output_dir or os.path.join(config.train.model_dir, "eval")


def read_record_table(file_pattern, dataset=None):
  """`rank_at_k.RecordTable` of the validation records (text fields only; images not decoded).

  dataset: optional dataset of record dicts read instead of `file_pattern`
  (`fashion_gen_tfds.read_records`, `data.source: tfds`).
  """
  columns = {"record_id": [], "product_id": [], "description": [], "group": []}
  if dataset is not None:
    batches = _text_batches(dataset)
  else:
    batches = (batch for _, _, batch in records.iterate_parsed_batches(file_pattern))
  for batch in batches:
    columns["record_id"].extend(batch["record_id"].tolist())
    columns["product_id"].extend(batch["product_id"].tolist())
    columns["description"].extend(d.decode("utf-8") for d in batch["description"])
    columns["group"].extend(zip((c.decode("utf-8") for c in batch["category"]),
                                (s.decode("utf-8") for s in batch["subcategory"])))
  return rank_at_k.RecordTable(record_id=np.array(columns["record_id"], np.int64),
                               product_id=np.array(columns["product_id"], np.int64),
                               description=columns["description"], group=columns["group"])


def _text_batches(dataset, batch_size=512):
  """Numpy batches of the text fields of a record-dict dataset."""
  keys = ("record_id", "product_id", "description", "category", "subcategory")
  for batch in dataset.map(lambda record: {key: record[key] for key in keys}).batch(batch_size):
    yield {key: value.numpy() for key, value in batch.items()}


def _checkpoint_step(path):
  match = re.search(r"ckpt-(\d+)$", path or "")
  return int(match.group(1)) if match else 0


def build_scorer(config, checkpoint=None, saved_model=None):
  """(PairScorer, description dict, whether the model reads precomputed features)."""
  if saved_model:
    scorer = scoring.SavedModelPairScorer(saved_model)
    source = {"saved_model": saved_model}
    precomputed = config.model.use_precomputed_features
    source.update(inference_settings.read_inference_settings(saved_model))
  else:
    precision = inference_precision.check_precision(config.eval.mixed_precision,
                                                    "eval.mixed_precision")
    length_bucket = inference_settings.resolve_length_bucket(config.eval.jit_compile,
                                                             config.eval.length_bucket)
    model, path, model_config = pretraining_run.restore_model(config, checkpoint)
    num_layers = int(model.encoder.get_config()["num_layers"])
    model = inference_precision.inference_model(model, model_config, precision,
                                                jit_compile=config.eval.jit_compile)
    scorer = scoring.KerasPairScorer(model, pretraining_run.feature_dim_of(model),
                                     jit_compile=config.eval.jit_compile,
                                     length_bucket=length_bucket,
                                     max_text_length=config.data.max_text_length)
    source = {"checkpoint": path, "step": _checkpoint_step(path), "num_layers": num_layers,
              "precision": precision, "jit_compile": bool(config.eval.jit_compile),
              "length_bucket": length_bucket}
    precomputed = model_config.use_precomputed_features
  return scorer, source, precomputed


def tia_negative_sampling(config):
  """Where TIA accuracy's negative texts come from: `eval.tia_negative_sampling`, or when empty
  `data.negative_sampling` (the training rule; random for look-alike training)."""
  return (config.eval.tia_negative_sampling or
          data_config_lib.held_out_negative_sampling(config.data.negative_sampling))


def approach_name(results):
  """"FashionBERT-2L" etc. (the paper's Approaches column), from the results' source."""
  num_layers = results.get("source", {}).get("num_layers")
  return f"FashionBERT-{num_layers}L" if num_layers else "FashionBERT"


def describe_source(source):
  """"runs/toy/ckpt-1100, bfloat16" or "exports/toy/1 (SavedModel), float32, XLA": what was scored,
  for the table's header (`build_scorer`'s description dict)."""
  where = source.get("checkpoint") or f"{source.get('saved_model')} (SavedModel)"
  parts = [where, source.get("precision", "float32")]
  if source.get("jit_compile"):
    parts.append("XLA")
  return ", ".join(str(part) for part in parts)


def format_table(results, ks):
  """The results laid out like the paper's Table 1 (percentages)."""
  header = ["Evaluation", "Approach", "Accuracy"] + [f"Rank@{k}" for k in ks]
  rows = []
  for direction in rank_at_k.DIRECTIONS:
    numbers = results[direction]
    rows.append([DIRECTION_TITLES[direction], approach_name(results),
                 f"{100 * numbers['accuracy']:.2f}%"]
                + [f"{100 * numbers[f'rank@{k}']:.2f}%" for k in ks])
  widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
  lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
           for row in [header] + rows]
  return "\n".join(lines)


def format_markdown_table(results, ks):
  header = ["Evaluation", "Approach", "Accuracy"] + [f"Rank@{k}" for k in ks]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for direction in rank_at_k.DIRECTIONS:
    numbers = results[direction]
    cells = [DIRECTION_TITLES[direction], approach_name(results),
             f"{100 * numbers['accuracy']:.2f}%"]
    cells += [f"{100 * numbers[f'rank@{k}']:.2f}%" for k in ks]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_outputs(results, table_markdown, directory, step):
  """results.json and TensorBoard text + scalars in `directory`; returns the JSON path."""
  tf.io.gfile.makedirs(directory)
  path = os.path.join(directory, RESULTS_FILE)
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  writer = tf.summary.create_file_writer(directory)
  with writer.as_default():
    tf.summary.text("evaluation/table", table_markdown, step=step)
    for direction in rank_at_k.DIRECTIONS:
      for name, value in results[direction].items():
        if isinstance(value, float):
          tf.summary.scalar(f"evaluation/{direction}/{name}", value, step=step)
    tf.summary.scalar("evaluation/tia_accuracy", results["tia_accuracy"], step=step)
  writer.flush()
  writer.close()
  return path


def write_retrieval_scores(arrays, directory, step):
  """Saves the scored retrieval grids as `<directory>/retrieval_scores.npz`; returns its path.

  Args:
    arrays: per direction d in `rank_at_k.DIRECTIONS`: `{d}_text_ids`, `{d}_image_ids` int64 [Q, C]
      (record ids of each pair), `{d}_scores` float [Q, C] (P(match)), `{d}_ground_truth`
      int64 [Q] (the ground truth's column).
    directory: the evaluation output folder.
    step: the evaluated checkpoint's step (stored as `step`, int64 scalar).
  """
  tf.io.gfile.makedirs(directory)
  path = os.path.join(directory, RETRIEVAL_SCORES_FILE)
  buffer = io.BytesIO()  # np.savez seeks, which a GFile opened for writing cannot
  np.savez(buffer, step=np.int64(step), **arrays)
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(buffer.getvalue())
  return path


def run_evaluation(config, checkpoint=None, saved_model=None):
  """Evaluates per the module docstring and returns the results dict.

  Args:
    config: ExperimentConfig (data paths, `eval` settings, `train.model_dir`).
    checkpoint: checkpoint prefix or folder; None = latest in `train.model_dir`.
    saved_model: path of an exported SavedModel version folder; used instead of a checkpoint.

  Returns:
    {"image_to_text": {"accuracy", "rank@1", "rank@5", "rank@10", "num_queries",
                       "num_candidates", "num_tia_pairs"}, "text_to_image": {...},
     "tia_accuracy": float, "scoring": {pairs, distinct_pairs, images, texts, seconds,
     pairs_per_second}, "source": {...}, "retrieval_scores_file": path (`write_retrieval_scores`),
     "results_file": path}
    Every accuracy and Rank@K is a fraction in [0, 1].
  """
  ks = [int(k) for k in config.eval.rank_ks]
  scorer, source, precomputed = build_scorer(config, checkpoint, saved_model)
  file_pattern = pipeline.split_file_pattern(config.data, "validation",
                                             image_mode=not precomputed)
  records_dataset = None
  if config.data.source == "tfds" and not precomputed:   # through builder.as_dataset
    # Lazy: importing tensorflow_datasets adds ~10% to TensorFlow's own import time (python
    # -X importtime); only data.source=tfds needs it.
    from fashionbert_tf.data.sources import fashion_gen_tfds  # pylint: disable=g-import-not-at-top
    records_dataset = lambda: fashion_gen_tfds.read_records(config.data, "validation")
  table = read_record_table(file_pattern,
                            records_dataset() if records_dataset is not None else None)
  logging.info("evaluating on %d validation records (%s)", len(table), file_pattern)
  tia_plans = rank_at_k.plan_tia(table, config.eval.seed, config.eval.max_tia_pairs,
                                tia_negative_sampling(config),
                                config.data.mixed_same_subcategory_fraction)
  candidate_sets = candidates_lib.load_candidates(config.data.candidates_file)
  retrieval_plans = rank_at_k.plan_retrieval(candidate_sets, table,
                                             config.eval.max_retrieval_queries)

  # One list of pairs for everything: TIA of both directions, then both retrieval grids.
  parts = [(plan.text_ids, plan.image_ids) for plan in tia_plans.values()]
  parts += [(plan.text_ids.reshape(-1), plan.image_ids.reshape(-1))
            for plan in retrieval_plans.values()]
  sizes = [len(text_ids) for text_ids, _ in parts]
  probabilities, stats = pair_scoring.score_pairs(
      scorer, table, tokenization.build_tokenizer(config.data),
      np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
      file_pattern, precomputed=precomputed, max_text_length=config.data.max_text_length,
      batch_size=config.eval.batch_size, images_per_step=config.eval.images_per_step,
      progress_interval=config.eval.progress_interval_s, records_dataset=records_dataset)
  pieces = np.split(probabilities, np.cumsum(sizes)[:-1])

  results = {"source": source, "scoring": stats, "candidates_file": config.data.candidates_file,
             "validation_records": len(table)}
  all_probabilities, all_labels = [], []
  retrieval_arrays = {}
  for i, (direction, plan) in enumerate(tia_plans.items()):
    tia_probability = pieces[i]
    retrieval_plan = retrieval_plans[direction]
    grid = pieces[len(tia_plans) + i].reshape(retrieval_plan.text_ids.shape)
    numbers = {"accuracy": metrics.tia_accuracy(tia_probability, plan.labels)}
    numbers.update({f"rank@{k}": value for k, value in metrics.rank_at_k(
        grid, retrieval_plan.ground_truth_index, ks).items()})
    numbers.update({"num_queries": int(grid.shape[0]), "num_candidates": int(grid.shape[1]),
                    "num_tia_pairs": int(len(plan.labels)),
                    "tia_negative_pools": plan.negative_pools})
    results[direction] = numbers
    retrieval_arrays.update({
        f"{direction}_text_ids": retrieval_plan.text_ids,
        f"{direction}_image_ids": retrieval_plan.image_ids,
        f"{direction}_scores": grid,
        f"{direction}_ground_truth": retrieval_plan.ground_truth_index})
    # Both directions' pairs as their accuracies count them (their shared positives once in each),
    # so the overall figure is their pair-weighted mean, half positives like each direction.
    all_probabilities.append(tia_probability)
    all_labels.append(plan.labels)
  results["tia_accuracy"] = metrics.tia_accuracy(np.concatenate(all_probabilities),
                                                 np.concatenate(all_labels))

  table_text = format_table(results, ks)
  print(f"\nFashionBERT evaluation ({describe_source(source)}):\n{table_text}\n"
        f"TIA accuracy over both directions' {sum(len(l) for l in all_labels)} pairs: "
        f"{100 * results['tia_accuracy']:.2f}%; scored {stats['distinct_pairs']} distinct pairs at "
        f"{stats['pairs_per_second']:.1f} pairs/s", flush=True)
  beyond = candidate_sets.get("queries_beyond_subcategory")
  if beyond and any(beyond.values()):
    # Small subcategories (a retailer's catalogue): candidates also from the category / any product.
    results["candidates_beyond_subcategory"] = beyond
    print(f"Candidate sets: {beyond['image_to_text']} image and {beyond['text_to_image']} text "
          f"queries of the candidate file have candidates from beyond their subcategory "
          f"({candidate_sets.get('fallback', 'widen')}; pools {candidate_sets['pool_counts']})",
          flush=True)
  results["retrieval_scores_file"] = write_retrieval_scores(
      retrieval_arrays, output_dir(config), source.get("step", 0))
  results["results_file"] = write_outputs(
      results, format_markdown_table(results, ks), output_dir(config), source.get("step", 0))
  logging.info("evaluation results -> %s", results["results_file"])
  return results
