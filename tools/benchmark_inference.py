"""Inference benchmark: batch-1 latency of the exported SavedModel, VSL vs padded to 512.

Paper 3.4 / Table 4 (Xeon E5-2650): 2-layer FashionBERT 22.3 ms padded, 18.3 ms with variable
sequence length (VSL). This tool measures, for each layer count (default 2, 6, 12; BERT-base width
768, 12 heads, FFN 3072, vocab 30,522, random weights, D = 2048 patch features):
  - the `score_features` signature of an exported SavedModel at batch 1 with precomputed patch
    features and a typical Fashion-Gen description (~40 WordPieces): VSL (T + 64 positions) vs the
    same text padded to 448 (448 + 64 = 512 positions), and their ratio, in one run;
  - the same VSL request through the Keras model directly (eager call, and wrapped in tf.function),
    to compare the SavedModel with Keras;
  - evaluation throughput in pairs/s: the evaluation's scorer (`KerasPairScorer`) on batches of
    `--eval_batch_size` pairs with texts of 30-50 WordPieces, VSL-padded per batch.
Latencies are medians over `--repeats` calls after `--warmup` calls. Speed is never asserted in
tests; run this by hand:

  python tools/benchmark_inference.py                       # 2, 6, 12 layers
  python tools/benchmark_inference.py --layers=2 --repeats=50
"""

import json
import os
import platform
import shutil
import statistics
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from fashionbert_tf import experiment_config
from fashionbert_tf.data import contract
from fashionbert_tf.data import tokenization
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.serving import export

LAYERS = flags.DEFINE_list("layers", ["2", "6", "12"], "Encoder layer counts to measure.")
REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per measurement (median reported).")
WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls before each measurement.")
EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", 128, "Pairs per call (throughput).")
EVAL_BATCHES = flags.DEFINE_integer("eval_batches", 3, "Timed batches for the throughput.")
FEATURE_DIM = flags.DEFINE_integer("feature_dim", 2048, "D, the patch feature size.")
OUTPUT = flags.DEFINE_string("output", "", "Optional JSON file for the numbers.")

# A Fashion-Gen-style description (the dataset's texts are of this kind and length).
TYPICAL_TEXT = ("Long sleeve cotton poplin shirt in navy blue. Spread collar. Button closure at "
                "front. Patch pocket at chest. Single-button barrel cuffs. Shirttail hem. Tonal "
                "stitching.")


def median_ms(function, repeats, warmup):
  for _ in range(warmup):
    function()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return 1000.0 * statistics.median(times)


def bench_layers(num_layers, text_inputs, rng, export_root):
  config = experiment_config.load_config(None, [
      f"model.encoder_format=none,model.num_layers={num_layers},model.hidden_size=768,"
      "model.num_attention_heads=12,model.intermediate_size=3072,model.vocab_size=30522,"
      f"model.backbone=linear,model.feature_dim={FEATURE_DIM.value}"])
  started = time.time()
  model = model_builder.build_fashionbert(config.model)
  build_s = time.time() - started
  started = time.time()
  path = export.export_saved_model(config, os.path.join(export_root, f"l{num_layers}"),
                                   model=model, version=1)
  export_s = time.time() - started
  loaded = tf.saved_model.load(path)
  score = loaded.signatures["score_features"]
  ids, mask, types = text_inputs
  features = tf.constant(rng.normal(size=[1, 64, FEATURE_DIM.value]).astype(np.float32))
  padded = scoring.pad_text_inputs(ids, mask, types, contract.MAX_TEXT_LENGTH)
  repeats, warmup = REPEATS.value, WARMUP.value

  def saved(inputs):
    return lambda: score(input_word_ids=inputs[0], input_mask=inputs[1],
                         input_type_ids=inputs[2], patch_features=features)

  keras_graph = tf.function(
      lambda i, m, t, f: scoring.model_match_probability(model, i, m, t, f),
      input_signature=scoring.text_signature() + [scoring.features_signature(FEATURE_DIM.value)])
  result = {
      "layers": num_layers, "build_s": round(build_s, 1), "export_s": round(export_s, 1),
      "text_positions": int(ids.shape[1]), "vsl_sequence": int(ids.shape[1]) + 64,
      "padded_sequence": int(padded[0].shape[1]) + 64,
  }
  # Interleave the two so that load from other processes hits both alike.
  result["savedmodel_vsl_ms"] = median_ms(saved((ids, mask, types)), repeats, warmup)
  result["savedmodel_padded_ms"] = median_ms(saved(padded), max(3, repeats // 2), 1)
  result["savedmodel_vsl_ms_again"] = median_ms(saved((ids, mask, types)), repeats, 1)
  result["vsl_over_padded"] = (min(result["savedmodel_vsl_ms"], result["savedmodel_vsl_ms_again"])
                               / result["savedmodel_padded_ms"])
  result["keras_eager_vsl_ms"] = median_ms(
      lambda: scoring.model_match_probability(model, ids, mask, types, features), repeats, warmup)
  result["keras_function_vsl_ms"] = median_ms(
      lambda: keras_graph(ids, mask, types, features), repeats, warmup)
  best_saved = min(result["savedmodel_vsl_ms"], result["savedmodel_vsl_ms_again"])
  result["savedmodel_over_keras_eager"] = best_saved / result["keras_eager_vsl_ms"]
  result["savedmodel_over_keras_function"] = best_saved / result["keras_function_vsl_ms"]

  # Evaluation throughput: the evaluation's scorer on VSL batches of typical lengths.
  scorer = scoring.KerasPairScorer(model, FEATURE_DIM.value)
  batch = EVAL_BATCH_SIZE.value
  lengths = rng.integers(32, 53, size=batch)  # 30-50 WordPieces + [CLS] + [SEP]
  eval_ids = np.zeros([batch, lengths.max()], np.int32)
  eval_mask = np.zeros_like(eval_ids)
  for row, length in enumerate(lengths):
    eval_ids[row, :length] = rng.integers(1000, 30000, size=length)
    eval_mask[row, :length] = 1
  eval_features = tf.constant(rng.normal(size=[batch, 64, FEATURE_DIM.value]).astype(np.float32))
  scorer.match_probability(eval_ids, eval_mask, np.zeros_like(eval_ids), eval_features)
  started = time.perf_counter()
  for _ in range(EVAL_BATCHES.value):
    scorer.match_probability(eval_ids, eval_mask, np.zeros_like(eval_ids), eval_features)
  result["eval_pairs_per_s"] = batch * EVAL_BATCHES.value / (time.perf_counter() - started)
  shutil.rmtree(os.path.dirname(path), ignore_errors=True)
  return result


def main(argv):
  del argv
  config = experiment_config.load_config(None, [])
  tokenizer = tokenization.build_tokenizer(config.data)
  text_inputs = tokenization.text_to_model_inputs(tokenizer, tf.constant([TYPICAL_TEXT]))
  rng = np.random.default_rng(0)
  export_root = tempfile.mkdtemp(prefix="fashionbert_bench_")
  header = {
      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
      "load_average_at_start": os.getloadavg(),
      "tensorflow": tf.__version__,
      "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
      "text": TYPICAL_TEXT, "wordpieces": int(text_inputs[0].shape[1]) - 2,
      "repeats": REPEATS.value, "eval_batch_size": EVAL_BATCH_SIZE.value,
  }
  print(json.dumps(header, indent=1), flush=True)
  results = []
  try:
    for num_layers in [int(layers) for layers in LAYERS.value]:
      result = bench_layers(num_layers, text_inputs, rng, export_root)
      results.append(result)
      print(json.dumps(result), flush=True)
  finally:
    shutil.rmtree(export_root, ignore_errors=True)
  print("\nbatch-1 latency (median ms), SavedModel `score_features`, precomputed features:")
  print(f"{'layers':>6} {'VSL':>9} {'padded512':>10} {'VSL/pad':>8} {'keras eager':>12} "
        f"{'keras tf.fn':>12} {'SM/eager':>9} {'SM/tf.fn':>9} {'eval pairs/s':>13}")
  for r in results:
    vsl = min(r["savedmodel_vsl_ms"], r["savedmodel_vsl_ms_again"])
    print(f"{r['layers']:>6} {vsl:>9.1f} {r['savedmodel_padded_ms']:>10.1f} "
          f"{r['vsl_over_padded']:>8.2f} {r['keras_eager_vsl_ms']:>12.1f} "
          f"{r['keras_function_vsl_ms']:>12.1f} {r['savedmodel_over_keras_eager']:>9.2f} "
          f"{r['savedmodel_over_keras_function']:>9.2f} {r['eval_pairs_per_s']:>13.1f}")
  print(f"load average at end: {os.getloadavg()} (machine shared with other jobs)")
  if OUTPUT.value:
    with open(OUTPUT.value, "w", encoding="utf-8") as f:
      json.dump({"header": header, "results": results}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
