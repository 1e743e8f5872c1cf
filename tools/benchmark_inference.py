"""Inference benchmark: precision x XLA for the exported SavedModel, side by side with PyTorch.

Paper 3.4 / Table 4 (Xeon E5-2650): 2-layer FashionBERT 22.3 ms padded, 18.3 ms with variable
sequence length (VSL). For each layer count (default 2, 6, 12; BERT-base width 768, 12 heads, FFN
3072, vocab 30,522, random weights, D = 2048 patch features), each precision (`--precisions`,
float32 | bfloat16, see fashionbert_tf/modeling/inference_precision.py) and each XLA setting
(`--jit`, false | true; true pads texts to multiples of 16 positions), in one run (the variants
of a layer count are timed in turns, so that load from other processes hits all alike; batch-1 VSL
calls `--block` in a row per turn, the first untimed, as one served model sees them, see
`round_robin_ms`; the PyTorch peer is timed the same way):
  - savedmodel_vsl_ms: the exported SavedModel's `score_features` signature at batch 1, precomputed
    patch features, a typical Fashion-Gen description (38 WordPieces; T + 64 = 104 positions);
    median of `--repeats` calls after `--warmup`;
  - savedmodel_padded_ms: the same text padded to 448 (448 + 64 = 512 positions);
  - keras_function_vsl_ms: the same request through the Keras model in a tf.function (export
    overhead = savedmodel / keras);
  - eval_pairs_per_s: the evaluation's scorer (`KerasPairScorer`, same precision and XLA setting)
    on batches of `--eval_batch_size` pairs with texts of 30-50 WordPieces, VSL-padded per batch;
    paper_eval_minutes = 202,000 pairs (the paper's protocol: 2 x 1,000 queries x 101 candidates)
    / eval_pairs_per_s / 60, an extrapolation;
  - max_abs_dp: the largest |P(match) - float32 P(match)| over the VSL request and the eval batch;
  - pytorch_fp32_ms / pytorch_bf16_ms (only when torch and transformers are installed:
    `pip install -e ".[bench]"`): the PyTorch peer on the same shapes, eager, batch 1, in
    `torch.inference_mode()`, float32 and under `torch.autocast("cpu", torch.bfloat16)`. The peer
    is Hugging Face `BertModel(BertConfig(hidden 768, 12 heads, FFN 3072, L layers, vocab 30,522,
    GELU))` with random weights, fed `inputs_embeds` [1, T + 64, 768] = concat(word embeddings of
    the T text ids, Linear(2048 -> 768)(patch features [1, 64, 2048])), token types 0 for text and
    1 for patches, attention mask all ones; then the pooler, Linear(768 -> 2) and a softmax: the
    computation FashionBERT does, except that BertModel adds its position embeddings to all T + 64
    positions (FashionBERT gives patches their own patch position table; same cost). The peer runs
    in a child process without TensorFlow (its OpenMP threads and TensorFlow's pools would share
    the cores), right after the TensorFlow variants of the same layer count.
TensorFlow (intra- and inter-op) and PyTorch (`torch.set_num_threads`) use `--threads` threads.
Speed is never asserted in tests; run this by hand (each run prints the machine and its load):

  python tools/benchmark_inference.py --precisions=float32,bfloat16 --jit=false,true \
      --output=/tmp/bench.json                                     # 2, 6, 12 layers
  python tools/benchmark_inference.py --layers=2 --repeats=50
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

LAYERS = flags.DEFINE_list("layers", ["2", "6", "12"], "Encoder layer counts to measure.")
PRECISIONS = flags.DEFINE_list("precisions", ["float32", "bfloat16"],
                               "Inference precisions to measure (float32, bfloat16).")
JIT = flags.DEFINE_list("jit", ["false", "true"], "XLA settings to measure (false, true).")
REPEATS = flags.DEFINE_integer("repeats", 20, "Timed batch-1 calls per measurement (median).")
BLOCK = flags.DEFINE_integer("block", 5, "Calls in a row per turn of the round robin (the first "
                             "untimed; see round_robin_ms). 1 = switch functions at every call.")
PADDED_REPEATS = flags.DEFINE_integer("padded_repeats", 4, "Timed calls padded to 512 (median).")
WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls before each measurement.")
EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", 32, "Pairs per call (throughput).")
EVAL_BATCHES = flags.DEFINE_integer("eval_batches", 2, "Timed batches for the throughput.")
FEATURE_DIM = flags.DEFINE_integer("feature_dim", 2048, "D, the patch feature size.")
THREADS = flags.DEFINE_integer("threads", os.cpu_count(),
                               "Threads for TensorFlow (intra and inter op) and PyTorch.")
PEER = flags.DEFINE_bool("pytorch", True, "Measure the PyTorch peer when torch is installed.")
PEER_OMP_WAIT_POLICY = flags.DEFINE_string(
    "pytorch_omp_wait_policy", "",
    "OMP_WAIT_POLICY for the PyTorch peer's process; empty = PyTorch's default. On a machine "
    "shared with other jobs, PASSIVE keeps OpenMP's spinning threads from collapsing (measured "
    "10x slower under load without it); on a quiet machine leave it empty.")
PEER_INPUTS = flags.DEFINE_string("peer_inputs", "", "Internal: run only the PyTorch peer on "
                                  "these inputs (.npz) and print its JSON.")
OUTPUT = flags.DEFINE_string("output", "", "Optional JSON file for the numbers.")

# A Fashion-Gen-style description (the dataset's texts are of this kind and length).
TYPICAL_TEXT = ("Long sleeve cotton poplin shirt in navy blue. Spread collar. Button closure at "
                "front. Patch pocket at chest. Single-button barrel cuffs. Shirttail hem. Tonal "
                "stitching.")
PAPER_EVAL_PAIRS = 2 * 1000 * 101
HIDDEN, HEADS, FFN, VOCAB = 768, 12, 3072, 30522


def median_ms(function, repeats, warmup):
  for _ in range(warmup):
    function()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return 1000.0 * statistics.median(times)


def cpu_model():
  try:
    output = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in output.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


# ---- the PyTorch peer ------------------------------------------------------------------------------

def pytorch_peer(num_layers, text_ids, features, repeats, warmup, threads):
  """{"pytorch_fp32_ms", "pytorch_bf16_ms", ...} (medians) or None without torch / transformers.

  See the module docstring for what the peer computes. Runs in this process: call it from the
  peer subprocess (`run_peer_subprocess`), never next to TensorFlow's thread pools.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.manual_seed(0)
  torch.set_num_threads(threads)
  config = transformers.BertConfig(
      vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=num_layers,
      num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=512,
      type_vocab_size=2, hidden_act="gelu")
  bert = transformers.BertModel(config).eval()
  projection = torch.nn.Linear(features.shape[-1], HIDDEN).eval()
  classifier = torch.nn.Linear(HIDDEN, 2).eval()
  ids = torch.from_numpy(np.asarray(text_ids, np.int64))
  patches = torch.from_numpy(np.asarray(features, np.float32))
  length = ids.shape[1] + patches.shape[1]
  token_types = torch.cat([torch.zeros_like(ids), torch.ones([1, patches.shape[1]],
                                                             dtype=torch.int64)], dim=1)
  attention_mask = torch.ones([1, length], dtype=torch.int64)

  def probability():
    with torch.inference_mode():
      embeds = torch.cat([bert.embeddings.word_embeddings(ids), projection(patches)], dim=1)
      pooled = bert(inputs_embeds=embeds, token_type_ids=token_types,
                    attention_mask=attention_mask).pooler_output
      return torch.softmax(classifier(pooled).float(), dim=-1)[:, 1]

  def probability_bf16():
    with torch.autocast("cpu", dtype=torch.bfloat16):
      return probability()

  for _ in range(warmup):
    probability()
    probability_bf16()
  # In turns of --block calls, as the TensorFlow variants are timed (`round_robin_ms`).
  fp32_ms, bf16_ms = round_robin_ms([probability, probability_bf16], repeats)
  return {"pytorch_fp32_ms": fp32_ms,
          "pytorch_bf16_ms": bf16_ms,
          "pytorch": torch.__version__, "transformers": transformers.__version__,
          "pytorch_threads": torch.get_num_threads(),
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}


def run_peer_subprocess(num_layers, text_ids, features, folder):
  """The peer in a fresh Python process (no TensorFlow in it); None without torch."""
  try:
    import importlib.util  # pylint: disable=g-import-not-at-top
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec(
        "transformers") is None:
      return None
  except (ImportError, ValueError):
    return None
  inputs = os.path.join(folder, f"peer_inputs_{num_layers}.npz")
  np.savez(inputs, text_ids=text_ids, features=features)
  env = dict(os.environ)
  if PEER_OMP_WAIT_POLICY.value:
    env["OMP_WAIT_POLICY"] = PEER_OMP_WAIT_POLICY.value
  command = [sys.executable, os.path.abspath(__file__), f"--peer_inputs={inputs}",
             f"--layers={num_layers}", f"--repeats={REPEATS.value}", f"--warmup={WARMUP.value}",
             f"--block={BLOCK.value}",
             f"--threads={THREADS.value}"]
  result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
  lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
  if result.returncode != 0 or not lines:
    print(f"PyTorch peer failed (exit {result.returncode}):\n{result.stderr[-2000:]}", flush=True)
    return None
  return json.loads(lines[-1])


# ---- TensorFlow ----------------------------------------------------------------------------------

def round_robin_ms(functions, repeats, block=None):
  """Median ms of each function over `repeats` timed calls, timed in turns so that load from
  other processes hits all alike.

  Each turn runs one function `block` (`--block`) times in a row and times all calls but the first:
  a server answers consecutive requests with one model, whose weights stay in the caches. Switching
  models at every call (block 1) adds a cold-cache cost of its own (the TensorFlow variants hold
  separate weights: ~2 ms at 2 layers, bfloat16) that a single served model never pays.
  """
  block = BLOCK.value if block is None else block
  times = [[] for _ in functions]
  while any(len(bucket) < repeats for bucket in times):
    for function, bucket in zip(functions, times):
      for call in range(block):
        start = time.perf_counter()
        function()
        if call > 0 or block == 1:
          bucket.append(time.perf_counter() - start)
  return [1000.0 * statistics.median(bucket[:repeats]) for bucket in times]


def keras_scoring_function(model, scoring):
  def score(input_word_ids, input_mask, input_type_ids, patch_features):
    return scoring.model_match_probability(model, input_word_ids, input_mask, input_type_ids,
                                           patch_features)
  return score


def bench_layers(num_layers, text_inputs, rng, export_root):
  """The rows (one per precision x jit) of one layer count, plus the peer's numbers."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.configs import experiment as experiment_config  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data import contract  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.evaluation import scoring  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.modeling import inference_precision  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.modeling import model_builder  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.serving import export  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.utils import inference_settings  # pylint: disable=g-import-not-at-top

  config = experiment_config.load_config(None, [
      f"model.encoder_format=none,model.num_layers={num_layers},model.hidden_size={HIDDEN},"
      f"model.num_attention_heads={HEADS},model.intermediate_size={FFN},model.vocab_size={VOCAB},"
      f"model.backbone=linear,model.feature_dim={FEATURE_DIM.value}"])
  model = model_builder.build_fashionbert(config.model)
  ids, mask, types = text_inputs
  features_np = rng.normal(size=[1, 64, FEATURE_DIM.value]).astype(np.float32)
  features = tf.constant(features_np)
  padded = scoring.pad_text_inputs(ids, mask, types, contract.MAX_TEXT_LENGTH)
  # The evaluation batch: texts of 30-50 WordPieces (+ [CLS] and [SEP]), sorted by length as the
  # evaluation sorts them, padded to the batch's longest.
  batch = EVAL_BATCH_SIZE.value
  lengths = np.sort(rng.integers(32, 53, size=batch))
  eval_ids = np.zeros([batch, lengths.max()], np.int32)
  eval_mask = np.zeros_like(eval_ids)
  for row, length in enumerate(lengths):
    eval_ids[row, :length] = rng.integers(1000, 30000, size=length)
    eval_mask[row, :length] = 1
  eval_types = np.zeros_like(eval_ids)
  eval_features = tf.constant(rng.normal(size=[batch, 64, FEATURE_DIM.value]).astype(np.float32))

  variants = []
  for precision in PRECISIONS.value:
    for jit in JIT.value:
      jit_compile = jit.lower() in ("true", "1", "yes")
      started = time.time()
      model_variant = inference_precision.inference_model(model, config.model, precision,
                                                          jit_compile=jit_compile)
      copy_s = time.time() - started
      started = time.time()
      path = export.export_saved_model(
          config, os.path.join(export_root, f"l{num_layers}_{precision}_{jit}"), model=model,
          version=1, precision=precision, jit_compile=jit_compile)
      row = {"layers": num_layers, "precision": precision, "jit": jit_compile,
             "export_s": round(time.time() - started, 1), "copy_s": round(copy_s, 1),
             "text_positions": int(ids.shape[1]), "vsl_sequence": int(ids.shape[1]) + 64,
             "padded_sequence": int(padded[0].shape[1]) + 64}
      score = tf.saved_model.load(path).signatures["score_features"]
      keras_graph = tf.function(
          keras_scoring_function(model_variant, scoring),
          input_signature=scoring.text_signature() + [
              scoring.features_signature(FEATURE_DIM.value)],
          jit_compile=jit_compile, autograph=False)
      scorer = scoring.KerasPairScorer(
          model_variant, FEATURE_DIM.value, jit_compile=jit_compile,
          length_bucket=inference_settings.resolve_length_bucket(jit_compile))

      def saved(inputs, score=score):
        return lambda: score(input_word_ids=inputs[0], input_mask=inputs[1],
                             input_type_ids=inputs[2],
                             patch_features=features)["match_probability"].numpy()

      variant = {
          "row": row,
          "vsl": saved((ids, mask, types)),
          "padded": saved(padded),
          # (Under XLA the tf.function sees the unbucketed length: its own compilation.)
          "keras": lambda g=keras_graph: g(ids, mask, types, features).numpy(),
          "eval": lambda s=scorer: s.match_probability(eval_ids, eval_mask, eval_types,
                                                       eval_features),
      }
      started = time.time()
      variant["p_vsl"] = variant["vsl"]()
      row["first_call_s"] = round(time.time() - started, 2)  # XLA: includes the compilation
      variant["padded"]()
      variant["p_eval"] = variant["eval"]()
      for _ in range(WARMUP.value):
        variant["vsl"]()
        variant["keras"]()
      variants.append(variant)

  timings = round_robin_ms([v["vsl"] for v in variants] + [v["keras"] for v in variants],
                           REPEATS.value)
  # (Long calls: one call per turn; a cache refill is small next to them.)
  padded_ms = round_robin_ms([v["padded"] for v in variants], PADDED_REPEATS.value, block=1)
  eval_ms = round_robin_ms([v["eval"] for v in variants], EVAL_BATCHES.value, block=1)
  reference = variants[0]
  rows = []
  for i, v in enumerate(variants):
    row = v["row"]
    row["savedmodel_vsl_ms"] = timings[i]
    row["keras_function_vsl_ms"] = timings[len(variants) + i]
    row["savedmodel_padded_ms"] = padded_ms[i]
    row["vsl_over_padded"] = row["savedmodel_vsl_ms"] / row["savedmodel_padded_ms"]
    row["eval_pairs_per_s"] = 1000.0 * batch / eval_ms[i]
    row["paper_eval_minutes"] = PAPER_EVAL_PAIRS / row["eval_pairs_per_s"] / 60.0
    row["max_abs_dp"] = float(max(np.abs(v["p_vsl"] - reference["p_vsl"]).max(),
                                  np.abs(v["p_eval"] - reference["p_eval"]).max()))
    row["p_match_vsl"] = float(v["p_vsl"][0])
    rows.append(row)
    print(json.dumps(row), flush=True)
  del variants
  shutil.rmtree(export_root, ignore_errors=True)
  os.makedirs(export_root, exist_ok=True)

  peer = run_peer_subprocess(num_layers, ids.numpy(), features_np, export_root) if (
      PEER.value) else None
  for row in rows:
    row["pytorch_fp32_ms"] = peer["pytorch_fp32_ms"] if peer else None
    row["pytorch_bf16_ms"] = peer["pytorch_bf16_ms"] if peer else None
  if peer:
    print(json.dumps({"layers": num_layers, **peer}), flush=True)
  return rows, peer


def add_ratios(rows):
  """Ratios to the float32, no-XLA export of the same layer count and to the PyTorch peer."""
  base = {r["layers"]: r for r in rows if r["precision"] == "float32" and not r["jit"]}
  for r in rows:
    b = base.get(r["layers"])
    r["vsl_over_float32_export"] = r["savedmodel_vsl_ms"] / b["savedmodel_vsl_ms"] if b else None
    r["eval_over_float32"] = r["eval_pairs_per_s"] / b["eval_pairs_per_s"] if b else None
    r["vsl_over_pytorch_fp32"] = (r["savedmodel_vsl_ms"] / r["pytorch_fp32_ms"]
                                  if r["pytorch_fp32_ms"] else None)
    r["vsl_over_pytorch_bf16"] = (r["savedmodel_vsl_ms"] / r["pytorch_bf16_ms"]
                                  if r["pytorch_bf16_ms"] else None)


def print_table(rows):
  def fmt(value, spec):
    return format(value, spec) if value is not None else "-"
  print("\nbatch 1, BERT-base width, D=2048, 38 WordPieces + 64 patches (VSL) / 512 positions "
        "(padded); medians in ms")
  header = (f"{'L':>3} {'precision':>9} {'jit':>5} {'VSL':>7} {'pad512':>7} {'keras':>7} "
            f"{'/f32':>5} {'/pt32':>6} {'/ptbf':>6} {'pt32':>7} {'ptbf16':>7} {'pairs/s':>8} "
            f"{'x f32':>6} {'paper min':>9} {'max|dP|':>8} {'1st s':>6}")
  print(header)
  for r in rows:
    print(f"{r['layers']:>3} {r['precision']:>9} {str(r['jit']).lower():>5} "
          f"{r['savedmodel_vsl_ms']:>7.1f} {r['savedmodel_padded_ms']:>7.1f} "
          f"{r['keras_function_vsl_ms']:>7.1f} {fmt(r['vsl_over_float32_export'], '5.2f'):>5} "
          f"{fmt(r['vsl_over_pytorch_fp32'], '6.2f'):>6} "
          f"{fmt(r['vsl_over_pytorch_bf16'], '6.2f'):>6} {fmt(r['pytorch_fp32_ms'], '7.1f'):>7} "
          f"{fmt(r['pytorch_bf16_ms'], '7.1f'):>7} {r['eval_pairs_per_s']:>8.1f} "
          f"{fmt(r['eval_over_float32'], '6.2f'):>6} {r['paper_eval_minutes']:>9.0f} "
          f"{r['max_abs_dp']:>8.4f} {r['first_call_s']:>6.1f}")
  print("columns: VSL / pad512 = SavedModel score_features; keras = Keras model in tf.function; "
        "/f32 = VSL over the float32 no-XLA export; /pt32, /ptbf = VSL over PyTorch eager "
        "float32 / bfloat16 autocast (pt32, ptbf16 ms); pairs/s = evaluation scorer; x f32 = "
        "over float32 pairs/s; paper min = 202,000 pairs / pairs/s; max|dP| = vs float32; "
        "1st s = first call (XLA compiles)")


def main(argv):
  del argv
  if PEER_INPUTS.value:
    with np.load(PEER_INPUTS.value) as inputs:
      peer = pytorch_peer(int(LAYERS.value[0]), inputs["text_ids"], inputs["features"],
                          REPEATS.value, WARMUP.value, THREADS.value)
    print(json.dumps(peer))
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(THREADS.value)
  tf.config.threading.set_inter_op_parallelism_threads(THREADS.value)
  from fashionbert_tf.configs import experiment as experiment_config  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data import tokenization  # pylint: disable=g-import-not-at-top
  config = experiment_config.load_config(None, [])
  tokenizer = tokenization.build_tokenizer(config.data)
  text_inputs = tokenization.text_to_model_inputs(tokenizer, tf.constant([TYPICAL_TEXT]))
  rng = np.random.default_rng(0)
  export_root = tempfile.mkdtemp(prefix="fashionbert_bench_")
  header = {
      "cpu": cpu_model(), "cores": os.cpu_count(),
      "load_average_at_start": os.getloadavg(),
      "tensorflow": tf.__version__, "threads": THREADS.value,
      "text": TYPICAL_TEXT, "wordpieces": int(text_inputs[0].shape[1]) - 2,
      "repeats": REPEATS.value, "padded_repeats": PADDED_REPEATS.value, "block": BLOCK.value,
      "eval_batch_size": EVAL_BATCH_SIZE.value, "eval_batches": EVAL_BATCHES.value,
      "precisions": PRECISIONS.value, "jit": JIT.value,
  }
  print(json.dumps(header, indent=1), flush=True)
  started = time.time()
  rows, peers = [], []
  try:
    for num_layers in [int(layers) for layers in LAYERS.value]:
      layer_rows, peer = bench_layers(num_layers, text_inputs, rng, export_root)
      rows += layer_rows
      if peer:
        peers.append({"layers": num_layers, **peer})
  finally:
    shutil.rmtree(export_root, ignore_errors=True)
  add_ratios(rows)
  print_table(rows)
  header["load_average_at_end"] = os.getloadavg()
  header["seconds"] = round(time.time() - started)
  print(f"CPU: {header['cpu']}, {header['cores']} cores, {THREADS.value} threads; load average "
        f"{header['load_average_at_start']} at start, {header['load_average_at_end']} at end; "
        f"{header['seconds']} s", flush=True)
  if OUTPUT.value:
    with open(OUTPUT.value, "w", encoding="utf-8") as f:
      json.dump({"header": header, "results": rows, "pytorch_peer": peers}, f, indent=1)
    print(f"JSON: {OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
