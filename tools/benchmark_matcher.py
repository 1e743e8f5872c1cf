r"""Pairs per second of `Matcher.score` against `fashionbert evaluate`'s scorer on the same pairs.

  python tools/benchmark_matcher.py                                   # 6-layer MiniLM size, float32
  python tools/benchmark_matcher.py --precision=bfloat16 --output=/tmp/matcher.json
  python tools/benchmark_matcher.py --size=tiny                       # 2 layers, hidden 32

Writes (once, in --work_dir) a toy Fashion-Gen validation split (`--products` products, prepared to
TFRecords with the retrieval candidate sets) and a training run with a randomly initialized
FashionBERT: `--size=minilm6` has the sizes of the offline default encoder, MiniLM-L6-H384 (6
layers, hidden 384, 12 heads, FFN 1536, vocabulary 30,522), a linear patch backbone with D = 2048;
`--size=tiny` is 2 layers of hidden 32. Then, in one process, on the pairs `run_evaluation` scores
(TIA pairs of both directions + both Rank@K grids; `--max_tia_pairs`, `--max_queries` per
direction):
  - evaluator: `evaluate.build_scorer` + `pair_scoring.score_pairs` (what `fashionbert evaluate`
    runs: TFRecords streamed, PNGs decoded by tf.data, features once per image, VSL batches);
  - matcher_files: `Matcher.load(run).score(texts, image paths)`, the validation images written as
    PNG files (so both decode the same PNGs; the Matcher with PIL, through `load_image`);
  - matcher_arrays: the same with the images given as uint8 arrays (decoding excluded).
Each is timed `--repeats` times, in turns (evaluator, files, arrays, evaluator, ...: load from other
processes hits all alike), after one untimed warm-up on a subset (tf.function tracing); the median
wall time of the whole call gives pairs/s (evaluator: excluding reading the record table and
planning the pairs, which the Matcher does not do). Also prints max |dP| Matcher - evaluator.
Same machine, same precision (`--precision`), same batch size (`--batch_size`) for both.
"""

import json
import os
import platform
import statistics
import time

from absl import app
from absl import flags
import numpy as np

SIZE = flags.DEFINE_enum("size", "minilm6", ["minilm6", "tiny"], "Model size (module docstring).")
PRECISION = flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"],
                              "Inference precision of both scorers.")
PRODUCTS = flags.DEFINE_integer("products", 60, "Toy validation products (~3.5 images each).")
QUERIES = flags.DEFINE_integer("queries", 20, "Rank@K queries per direction.")
CANDIDATES = flags.DEFINE_integer("candidates", 20, "Rank@K candidates of other products.")
MAX_TIA_PAIRS = flags.DEFINE_integer("max_tia_pairs", 0, "TIA pairs per direction (0 = all).")
MAX_QUERIES = flags.DEFINE_integer("max_queries", 0,
                                   "Rank@K queries scored per direction (0 = all --queries).")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Pairs per model call (both scorers).")
REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per scorer (median).")
THREADS = flags.DEFINE_integer("threads", 0, "TensorFlow intra/inter-op threads (0 = default).")
WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/fashionbert_benchmark_matcher",
                               "Where the toy data and the run go (reused when present).")
OUTPUT = flags.DEFINE_string("output", "", "Optional JSON output file.")

SIZES = {
    "minilm6": dict(num_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536,
                    feature_dim=2048),
    "tiny": dict(num_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                 feature_dim=16),
}


def experiment(root):
  """The benchmark's ExperimentConfig (data, model, run dir under `root`)."""
  from fashionbert_tf.configs import experiment as experiment_config  # pylint: disable=g-import-not-at-top
  model = dict(SIZES[SIZE.value], encoder_format="none", backbone="linear", vocab_size=30522,
               patch_feature_normalization="none", max_position_embeddings=512)
  return experiment_config.load_config(None, [{
      "data": {"train_hdf5": f"{root}/train.h5", "validation_hdf5": f"{root}/validation.h5",
               "tfrecord_dir": f"{root}/tfrecords", "num_shards": 2,
               "candidates_file": f"{root}/tfrecords/candidates.json",
               "num_text_queries": QUERIES.value, "num_image_queries": QUERIES.value,
               "num_candidates": CANDIDATES.value},
      "model": model,
      "train": {"model_dir": f"{root}/run-{SIZE.value}"},
      "eval": {"batch_size": BATCH_SIZE.value, "mixed_precision": PRECISION.value,
               "max_tia_pairs": MAX_TIA_PAIRS.value,
               "max_retrieval_queries": MAX_QUERIES.value}}])


def prepare(config):
  """Toy data, PNG files of the validation images and the run (params.yaml + ckpt-1), once."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from official.modeling.hyperparams import params_dict  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data import records  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data.toy import fashion_gen  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.modeling import model_builder  # pylint: disable=g-import-not-at-top
  data = config.data
  if not os.path.exists(data.candidates_file):
    fashion_gen.make_toy_fashiongen(data.train_hdf5, data.validation_hdf5,
                                       num_train_products=8,
                                       num_validation_products=PRODUCTS.value, seed=5,
                                       num_empty_descriptions=0)
    prepare_lib.prepare_dataset(data)
  file_pattern = records.split_file_pattern(data.tfrecord_dir, "validation")
  image_dir = os.path.join(os.path.dirname(data.tfrecord_dir), "images")
  paths = {}
  os.makedirs(image_dir, exist_ok=True)
  for record in records.read_records(file_pattern, decode=False):
    record_id = int(record["record_id"])
    paths[record_id] = os.path.join(image_dir, f"{record_id}.png")
    if not os.path.exists(paths[record_id]):
      with open(paths[record_id], "wb") as f:
        f.write(record["image"].numpy())   # prepare-data stores PNGs: the same bytes
  model_dir = config.train.model_dir
  if not tf.train.latest_checkpoint(model_dir):
    model = model_builder.build_fashionbert(config.model)
    os.makedirs(model_dir, exist_ok=True)
    params_dict.save_params_dict_to_yaml(config, os.path.join(model_dir, "params.yaml"))
    checkpoint = tf.train.Checkpoint(model=model)
    tf.train.CheckpointManager(checkpoint, model_dir, 1).save(checkpoint_number=1)
  return file_pattern, paths


def evaluation_pairs(config, file_pattern):
  """(table, text record ids [N], image record ids [N]): the pairs `run_evaluation` scores."""
  from fashionbert_tf.data import candidates  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.evaluation import rank_at_k  # pylint: disable=g-import-not-at-top
  table = evaluate.read_record_table(file_pattern)
  parts = [(p.text_ids, p.image_ids) for p in rank_at_k.plan_tia(
      table, config.eval.seed, config.eval.max_tia_pairs).values()]
  parts += [(p.text_ids.reshape(-1), p.image_ids.reshape(-1)) for p in rank_at_k.plan_retrieval(
      candidates.load_candidates(config.data.candidates_file), table,
      config.eval.max_retrieval_queries).values()]
  return (table, np.concatenate([t for t, _ in parts]), np.concatenate([i for _, i in parts]))


def round_robin(calls, repeats):
  """{name: (median seconds, last result)} of `calls` ({name: function}), timed in turns (each
  repeat runs every call once), so that load from other processes hits all alike."""
  seconds = {name: [] for name in calls}
  results = {}
  for _ in range(repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      results[name] = call()
      seconds[name].append(time.perf_counter() - start)
      print(f"  {name:15s} {seconds[name][-1]:8.2f} s", flush=True)
  return {name: (statistics.median(seconds[name]), results[name]) for name in calls}


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if THREADS.value:
    tf.config.threading.set_intra_op_parallelism_threads(THREADS.value)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS.value)
  from fashionbert_tf import Matcher  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data import records  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data import tokenization  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.evaluation import pair_scoring  # pylint: disable=g-import-not-at-top

  config = experiment(WORK_DIR.value)
  file_pattern, paths = prepare(config)
  table, text_ids, image_ids = evaluation_pairs(config, file_pattern)
  texts = [table.description_of(rid) for rid in text_ids]
  image_files = [paths[int(rid)] for rid in image_ids]
  arrays = {int(r["record_id"]): r["image"].numpy() for r in records.read_records(file_pattern)}
  image_arrays = [arrays[int(rid)] for rid in image_ids]
  distinct_images = len(set(image_ids.tolist()))
  print(f"{len(text_ids)} pairs ({len(set(zip(texts, image_ids.tolist())))} distinct) over "
        f"{distinct_images} images and {len(set(texts))} texts; model {SIZE.value}, "
        f"{PRECISION.value}, batch {BATCH_SIZE.value}", flush=True)

  scorer, _, _ = evaluate.build_scorer(config)
  tokenizer = tokenization.build_tokenizer(config.data)

  def evaluator(count=None):
    return pair_scoring.score_pairs(
        scorer, table, tokenizer, text_ids[:count], image_ids[:count], file_pattern,
        batch_size=BATCH_SIZE.value, images_per_step=config.eval.images_per_step,
        progress_interval=1e9)[0]

  matcher = Matcher.load(config.train.model_dir, precision=PRECISION.value,
                         batch_size=BATCH_SIZE.value)
  warm = 2 * BATCH_SIZE.value
  evaluator(warm)
  matcher.score(texts[:warm], image_files[:warm])
  print(f"warm-up done ({warm} pairs each)", flush=True)
  timings = round_robin({"evaluator": evaluator,
                         "matcher_files": lambda: matcher.score(texts, image_files),
                         "matcher_arrays": lambda: matcher.score(texts, image_arrays)},
                        REPEATS.value)
  reference = timings["evaluator"][1]
  results = {}
  for name, (seconds, scores) in timings.items():
    results[name] = {"seconds": round(seconds, 3),
                     "pairs_per_second": round(len(text_ids) / seconds, 1),
                     "max_abs_dp_vs_evaluator": float(np.max(np.abs(scores - reference)))}
    print(f"{name:15s} {seconds:8.2f} s  {len(text_ids) / seconds:8.1f} pairs/s", flush=True)
  summary = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                        f"load {os.getloadavg()[0]:.1f}",
             "size": SIZE.value, "precision": PRECISION.value, "batch_size": BATCH_SIZE.value,
             "pairs": int(len(text_ids)), "images": distinct_images, "results": results}
  print(json.dumps(summary, indent=1))
  if OUTPUT.value:
    with open(OUTPUT.value, "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1)


if __name__ == "__main__":
  app.run(main)
