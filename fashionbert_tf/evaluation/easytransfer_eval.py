"""Scores the authors' published evaluation files (EasyTransfer FashionBERT) with this code.

Their six files (Fashion-Gen; image-to-text and text-to-image, three files each; 1,000 queries a
direction x 101 candidates, precomputed 64 x 2048 ResNet-50 patch features) hold one (text, image)
pair a line with its label (`data/easytransfer_files.py`). This module scores every pair with a
restored model (usually `fashionbert import-checkpoint --format easytransfer` of their released
checkpoint) and analyses the scores as their `prediction_analysis` does:

  - accuracy: argmax of the two TIA logits == label, over every pair of the direction;
  - queries: pairs grouped by the query side's product id (image-to-text: image_prod_id,
    text-to-image: text_prod_id), across files, in file order;
  - Rank@K (K = 1, 5, 10, 100): the fraction of queries with a label-1 pair among their first
    min(K, candidates) pairs after sorting by the score, highest first.

Ranking score (`rank_by`): "match_logit" = tia_logits[:, 1], the raw logit their analysis sorts
by (to reproduce their numbers), or "p_match" = softmax(tia_logits)[:, 1], our protocol's
P(match). The two orders differ because logit 0 varies between pairs. Both rankings are computed;
`rank_by` picks the one in the table. Ties count against the ground truth (our convention; their
stable sort keeps the order their parallel reader happened to deliver).

Their README's Rank@100 (0.55 / 0.56) cannot come from a clean 1 + 100 candidate set, where
Rank@100 is 1 unless the ground truth ranks last. So the counts behind the ranking are reported
beside it, never folded away: queries, queries holding at least one ground truth (label 1), holding
more than one, candidates per query (min / median / max, and how many have exactly 101), and
Rank@K over only the queries that hold a ground truth.
"""

import collections
import io
import json
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import easytransfer_files
from fashionbert_tf.evaluation import evaluate
from fashionbert_tf.evaluation import pretraining_run
from fashionbert_tf.modeling import inference_precision

DIRECTIONS = ("image_to_text", "text_to_image")
DIRECTION_TITLES = {"image_to_text": "Image-to-Text", "text_to_image": "Text-to-Image"}
THEIR_DIRECTION_NAMES = {"image_to_text": "img2txt", "text_to_image": "txt2img"}
RANK_BY = ("match_logit", "p_match")
KS = (1, 5, 10, 100)
RESULTS_FILE = "results_authors_files.json"
SCORES_FILE = "scores_authors_files.npz"
# scripts/fashion_bert/README.md of EasyTransfer: their released model on these files.
REPORTED = {
    "image_to_text": {"accuracy": 0.913441733253, "rank@1": 0.243154434594,
                      "rank@5": 0.462760128901, "rank@10": 0.515881705828,
                      "rank@100": 0.547645122959},
    "text_to_image": {"accuracy": 0.912456911831, "rank@1": 0.28947368259,
                      "rank@5": 0.479843222397, "rank@10": 0.521276592826,
                      "rank@100": 0.559910411199},
}


QueryGroups = collections.namedtuple("QueryGroups", ["query_ids", "members"])


def group_queries(text_prod_ids, image_prod_ids, direction):
  """Groups pairs into queries as their analysis does: by the query side's product id.

  img2txt (image_to_text): query = image_prod_id; txt2img (text_to_image): query = text_prod_id.
  Every pair whose query-side product id is the same joins one query, whatever file or batch it
  came from, so a product that appears as a query twice (or whose pairs repeat) makes one query
  with more than 101 candidates, and a query whose ground-truth pair is absent has none.

  Returns:
    QueryGroups: query ids in first-seen order, and for each the indices of its pairs in order.
  """
  keys = image_prod_ids if direction == "image_to_text" else text_prod_ids
  members = collections.OrderedDict()
  for index, key in enumerate(keys):
    members.setdefault(key, []).append(index)
  return QueryGroups(list(members), [np.array(m, np.int64) for m in members.values()])


def check_rank_by(rank_by):
  if rank_by not in RANK_BY:
    raise ValueError(f"rank_by = {rank_by!r}; expected one of {', '.join(RANK_BY)}")
  return rank_by


def rank_at_k_grouped(scores, labels, groups, ks=KS):
  """Their Rank@K over queries of different sizes.

  Args:
    scores: float [N], higher = better match.
    labels: int [N], 1 = ground truth.
    groups: list of int index arrays (a query's pairs).
    ks: cutoffs.
  Returns:
    {k: fraction of all queries with a label-1 pair among the first min(k, n) after a descending
     sort; ties against the ground truth}, and the same over the queries that hold one.
  """
  best_rank = np.full(len(groups), np.inf)  # 1-based rank of the best-placed ground truth
  for q, members in enumerate(groups):
    member_scores, member_labels = scores[members], labels[members]
    positives = member_scores[member_labels == 1]
    if positives.size:
      # Ties against: every negative scoring >= the best positive ranks above it.
      best = positives.max()
      best_rank[q] = 1 + np.sum(member_scores[member_labels != 1] >= best)
  holding = np.isfinite(best_rank)
  all_queries = {k: float(np.mean(best_rank <= k)) if len(groups) else 0.0 for k in ks}
  with_truth = {k: float(np.mean(best_rank[holding] <= k)) if holding.any() else 0.0
                for k in ks}
  return all_queries, with_truth


def query_statistics(labels, groups):
  sizes = np.array([len(m) for m in groups], np.int64)
  truths = np.array([int(np.sum(labels[m] == 1)) for m in groups], np.int64)
  return {
      "num_pairs": int(labels.shape[0]),
      "num_queries": len(groups),
      "queries_with_ground_truth": int(np.sum(truths >= 1)),
      "queries_with_several_ground_truths": int(np.sum(truths > 1)),
      "queries_without_ground_truth": int(np.sum(truths == 0)),
      "candidates_per_query": {
          "min": int(sizes.min()) if sizes.size else 0,
          "median": float(np.median(sizes)) if sizes.size else 0.0,
          "max": int(sizes.max()) if sizes.size else 0,
          "queries_with_exactly_101": int(np.sum(sizes == 101)),
      },
  }


def analyse(direction, logits, labels, text_prod_ids, image_prod_ids, ks=KS):
  """Their analysis of one direction's scored pairs (module docstring); returns a dict."""
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels, np.int64)
  groups = group_queries(text_prod_ids, image_prod_ids, direction)
  result = {"accuracy": float(np.mean(np.argmax(logits, axis=1) == labels)) if len(labels)
            else 0.0}
  result.update(query_statistics(labels, groups.members))
  shifted = logits - logits.max(axis=1, keepdims=True)
  p_match = np.exp(shifted[:, 1]) / np.exp(shifted).sum(axis=1)
  for name, scores in (("match_logit", logits[:, 1]), ("p_match", p_match)):
    every, holding = rank_at_k_grouped(scores, labels, groups.members, ks)
    result[f"ranked_by_{name}"] = {
        **{f"rank@{k}": v for k, v in every.items()},
        **{f"rank@{k}_queries_with_ground_truth": v for k, v in holding.items()}}
  return result


def score_files(score_fn, paths, batch_size, progress_interval_s=10.0, schema=None):
  """Runs `score_fn` (batch dict -> tia_logits [B, 2]) over every pair of `paths`.

  Returns:
    dict of arrays: logits float32 [N, 2], labels int64 [N], text_prod_id, image_prod_id,
    prod_img_id (str [N]), file index int64 [N], line int64 [N].
  """
  schema = schema or easytransfer_files.EVAL_SCHEMA
  feature_dim = easytransfer_files.eval_feature_dim(schema)
  columns = {k: [] for k in ("logits", "labels", "text_prod_id", "image_prod_id", "prod_img_id",
                             "file", "line")}
  file_index = {path: i for i, path in enumerate(paths)}
  start = last = time.time()
  done = done_size = 0
  total_size = sum(os.path.getsize(path) for path in paths)  # for the ETA
  for batch in easytransfer_files.batched_records(paths, batch_size, schema):
    inputs = easytransfer_files.model_inputs(batch, feature_dim)
    columns["logits"].append(np.asarray(score_fn(inputs), np.float32))
    for path, line_number, record in batch:
      columns["labels"].append(int(record["nx_sent_labels"][0]))
      columns["text_prod_id"].append(record["text_prod_id"])
      columns["image_prod_id"].append(record["image_prod_id"])
      columns["prod_img_id"].append(record.get("prod_img_id", ""))
      columns["file"].append(file_index[path])
      columns["line"].append(line_number)
      done_size += record[easytransfer_files.LINE_SIZE_KEY]
    done += len(batch)
    now = time.time()
    if now - last >= progress_interval_s:
      last = now
      elapsed = max(now - start, 1e-9)
      eta = elapsed * max(total_size - done_size, 0) / max(done_size, 1)
      logging.info("scored %d pairs (%.1f pairs/s), %.1f%% of %.1f MB read, ETA %.0f s", done,
                   done / elapsed, 100.0 * done_size / max(total_size, 1), total_size / 1e6, eta)
  logits = (np.concatenate(columns["logits"]) if columns["logits"]
            else np.zeros([0, 2], np.float32))
  return dict(logits=logits, labels=np.array(columns["labels"], np.int64),
              text_prod_id=np.array(columns["text_prod_id"], str),
              image_prod_id=np.array(columns["image_prod_id"], str),
              prod_img_id=np.array(columns["prod_img_id"], str),
              file=np.array(columns["file"], np.int64), line=np.array(columns["line"], np.int64),
              seconds=time.time() - start)


def keras_logits_fn(model, feature_dim, text_length=None):
  """batch dict -> tia_logits [B, 2] of a restored model (any `inference_model`), inference mode."""
  signature = {
      "input_word_ids": tf.TensorSpec([None, text_length], tf.int32),
      "input_mask": tf.TensorSpec([None, text_length], tf.int32),
      "input_type_ids": tf.TensorSpec([None, text_length], tf.int32),
      contract.FEATURES_KEY: tf.TensorSpec([None, contract.NUM_PATCHES, feature_dim], tf.float32),
  }

  @tf.function(input_signature=[signature])
  def logits(inputs):
    return tf.cast(model(inputs, training=False)["tia_logits"], tf.float32)
  return lambda inputs: logits(inputs).numpy()


def format_table(results, rank_by, ks=KS):
  """Table 1 layout (percentages) for this model and the numbers their README reports, then the
  query counts behind the ranking."""
  header = ["Evaluation", "Approach", "Accuracy"] + [f"Rank@{k}" for k in ks]
  rows = []
  for direction in DIRECTIONS:
    if direction not in results:
      continue
    numbers = results[direction]
    ranked = numbers[f"ranked_by_{rank_by}"]
    rows.append([DIRECTION_TITLES[direction], f"this code ({rank_by})",
                 f"{100 * numbers['accuracy']:.2f}%"]
                + [f"{100 * ranked[f'rank@{k}']:.2f}%" for k in ks])
    reported = REPORTED[direction]
    rows.append(["", "authors' README", f"{100 * reported['accuracy']:.2f}%"]
                + [f"{100 * reported[f'rank@{k}']:.2f}%" if f"rank@{k}" in reported else "-"
                   for k in ks])
  widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
  lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
           for row in [header] + rows]
  lines.append("")
  for direction in DIRECTIONS:
    if direction not in results:
      continue
    n = results[direction]
    c = n["candidates_per_query"]
    ranked = n[f"ranked_by_{rank_by}"]
    lines.append(
        f"{DIRECTION_TITLES[direction]}: {n['num_pairs']} pairs in {n['num_queries']} queries; "
        f"{n['queries_with_ground_truth']} hold a ground truth ({n['queries_without_ground_truth']}"
        f" none, {n['queries_with_several_ground_truths']} several); candidates per query "
        f"min {c['min']} / median {c['median']:g} / max {c['max']}, exactly 101: "
        f"{c['queries_with_exactly_101']}. Over the queries holding a ground truth: "
        + ", ".join(f"Rank@{k} {100 * ranked[f'rank@{k}_queries_with_ground_truth']:.2f}%"
                    for k in ks))
  return "\n".join(lines)


def evaluate_files(score_fn, files_by_direction, batch_size, output_dir, rank_by="match_logit",
                   source=None, progress_interval_s=10.0, schema=None):
  """Scores and analyses their files; prints the table; writes results JSON + scores npz.

  Args:
    score_fn: batch dict -> tia_logits [B, 2] (`keras_logits_fn`).
    files_by_direction: {"image_to_text": [paths], "text_to_image": [paths]} (either may be
      absent).
    batch_size: pairs per model call.
    output_dir: where RESULTS_FILE and SCORES_FILE go.
    rank_by: "match_logit" (theirs) or "p_match" (ours): which ranking the table shows.
    source: dict describing the model (checkpoint path, ...), stored in the results.

  Returns:
    the results dict ({direction: analysis, "rank_by", "source", "files", "results_file"}).
  """
  check_rank_by(rank_by)
  results = {"rank_by": rank_by, "source": source or {}, "files": {}, "reported": REPORTED}
  arrays = {}
  for direction in DIRECTIONS:
    paths = files_by_direction.get(direction)
    if not paths:
      continue
    logging.info("scoring the authors' %s files: %s", THEIR_DIRECTION_NAMES[direction], paths)
    scored = score_files(score_fn, paths, batch_size, progress_interval_s, schema)
    results[direction] = analyse(direction, scored["logits"], scored["labels"],
                                 scored["text_prod_id"], scored["image_prod_id"])
    results[direction]["seconds"] = scored.pop("seconds")
    results["files"][direction] = list(paths)
    arrays.update({f"{direction}_{key}": value for key, value in scored.items()})
  table = format_table(results, rank_by)
  print(f"\nThe authors' evaluation files scored with this code ({results['source']}):\n"
        f"{table}\n", flush=True)
  tf.io.gfile.makedirs(output_dir)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  with tf.io.gfile.GFile(os.path.join(output_dir, SCORES_FILE), "wb") as f:
    f.write(buffer.getvalue())
  results["results_file"] = os.path.join(output_dir, RESULTS_FILE)
  results["table"] = table
  with tf.io.gfile.GFile(results["results_file"], "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  logging.info("authors' files results -> %s", results["results_file"])
  return results


def run_evaluation(config, files_by_direction, checkpoint=None, rank_by="match_logit",
                   schema=None):
  """Restores the run of `config` (`train.model_dir`, or `checkpoint`) and scores their files.

  Raises:
    ValueError: the model's patch feature size is not the files' D, or an unknown rank_by.
  """
  check_rank_by(rank_by)
  schema = schema or easytransfer_files.EVAL_SCHEMA
  feature_dim = easytransfer_files.eval_feature_dim(schema)
  precision = inference_precision.check_precision(config.eval.mixed_precision,
                                                  "eval.mixed_precision")
  model, path, model_config = pretraining_run.restore_model(config, checkpoint)
  if pretraining_run.feature_dim_of(model) != feature_dim:
    raise ValueError(f"the model reads {pretraining_run.feature_dim_of(model)}-d patch features; the "
                     f"authors' files hold {feature_dim}-d ones (schema image_feature)")
  num_layers = int(model.encoder.get_config()["num_layers"])
  model = inference_precision.inference_model(model, model_config, precision)
  source = {"checkpoint": path, "num_layers": num_layers, "precision": precision,
            "patch_embedding": model_config.patch_embedding}
  return evaluate_files(keras_logits_fn(model, feature_dim), files_by_direction,
                        config.eval.batch_size, evaluate.output_dir(config), rank_by=rank_by,
                        source=source, progress_interval_s=config.eval.progress_interval_s,
                        schema=schema)
