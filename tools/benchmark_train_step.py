"""Train-step cost of each loss-weighting mode, side by side, in one run.

  python tools/benchmark_train_step.py [--num_layers 2 --hidden_size 128 --batch_size 16 ...]

Builds a small random FashionBERT (`model.encoder_format: none`, precomputed patch features) for
each of `fixed`, `loss_softmax`, `grad_norm` (scope `shared_variables`, the paper) and `grad_norm`
with scope `sequence_output` (the cheaper option), runs the Keras-compiled train step on the same
synthetic batch, and prints the median step time, examples/s and the ratio to `fixed`.
Targets: grad_norm <= 2.5x fixed; grad_norm/sequence_output <= 1.2x fixed.
"""

import json
import statistics
import time

from absl import app
from absl import flags
import tensorflow as tf
import tf_keras

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.training import pretrain
from fashionbert_tf.training import strategies
from fashionbert_tf.training import synthetic

NUM_LAYERS = flags.DEFINE_integer("num_layers", 2, "encoder layers")
HIDDEN_SIZE = flags.DEFINE_integer("hidden_size", 128, "encoder width")
NUM_HEADS = flags.DEFINE_integer("num_attention_heads", 2, "attention heads")
VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 30522, "vocabulary (BERT's by default)")
FEATURE_DIM = flags.DEFINE_integer("feature_dim", 512, "patch feature size D")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "global batch size")
TEXT_LENGTH = flags.DEFINE_integer("text_length", 32, "text positions T")
MASKED_TOKENS = flags.DEFINE_integer("masked_tokens", 5, "MLM slots P")
WARMUP = flags.DEFINE_integer("warmup_steps", 3, "untimed steps (tracing) per mode")
STEPS = flags.DEFINE_integer("steps", 20, "timed steps per mode")
ROUNDS = flags.DEFINE_integer("rounds", 2, "timed rounds, modes interleaved")
MIXED_PRECISION = flags.DEFINE_string("mixed_precision", "float32", "float32 | mixed_float16 | "
                                      "mixed_bfloat16")
JIT = flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step")

MODES = (("fixed", "shared_variables"), ("loss_softmax", "shared_variables"),
         ("grad_norm", "shared_variables"), ("grad_norm", "sequence_output"))


def build(mode, scope):
  hidden = HIDDEN_SIZE.value
  model = dict(synthetic.tiny_model_overrides(feature_dim=FEATURE_DIM.value,
                                              vocab_size=VOCAB_SIZE.value),
               num_layers=NUM_LAYERS.value, hidden_size=hidden,
               num_attention_heads=NUM_HEADS.value, intermediate_size=4 * hidden,
               max_position_embeddings=TEXT_LENGTH.value + 64, dropout_rate=0.1,
               attention_dropout_rate=0.1)
  config = experiment_config.load_config(None, [{"model": model, "train": {
      "loss_weighting": mode, "grad_norm_scope": scope, "global_batch_size": BATCH_SIZE.value,
      "mixed_precision": MIXED_PRECISION.value, "jit_compile": JIT.value,
      "strategy": "one_device"}}])
  strategies.set_precision_policy(config.train)
  strategy = strategies.build_strategy(config.train)
  tf_keras.utils.set_random_seed(0)
  _, _, pretrainer, _ = pretrain.build_training_objects(config, strategy)
  dataset = synthetic.synthetic_dataset(
      BATCH_SIZE.value, num_examples=BATCH_SIZE.value * 4, vocab_size=VOCAB_SIZE.value,
      feature_dim=FEATURE_DIM.value, text_length=TEXT_LENGTH.value,
      num_masked_tokens=MASKED_TOKENS.value)
  iterator = iter(strategy.experimental_distribute_dataset(dataset))
  train_function = pretrainer.make_train_function()
  for _ in range(WARMUP.value):
    float(train_function(iterator)["loss"])
  return train_function, iterator


def time_steps(train_function, iterator, steps):
  durations = []
  for _ in range(steps):
    start = time.perf_counter()
    float(train_function(iterator)["loss"])  # waits for the step
    durations.append(time.perf_counter() - start)
  return durations


def main(argv):
  del argv
  built = {mode: build(*mode) for mode in MODES}
  durations = {mode: [] for mode in MODES}
  for _ in range(ROUNDS.value):  # Interleaved, so a load change on the machine hits every mode.
    for mode in MODES:
      durations[mode] += time_steps(*built[mode], STEPS.value)
  settings = dict(device=(tf.config.list_logical_devices("GPU") or
                          tf.config.list_logical_devices("CPU"))[0].name,
                  num_layers=NUM_LAYERS.value, hidden_size=HIDDEN_SIZE.value,
                  vocab_size=VOCAB_SIZE.value, feature_dim=FEATURE_DIM.value,
                  batch_size=BATCH_SIZE.value, text_length=TEXT_LENGTH.value,
                  sequence_length=TEXT_LENGTH.value + 64, steps=STEPS.value * ROUNDS.value,
                  mixed_precision=MIXED_PRECISION.value, jit_compile=JIT.value)
  print("settings:", json.dumps(settings))
  fixed = statistics.median(durations[MODES[0]])
  print(f"{'mode':<32}{'step ms (median)':>18}{'examples/s':>12}{'x fixed':>9}")
  rows = {}
  for mode in MODES:
    median = statistics.median(durations[mode])
    name = mode[0] if mode[1] == "shared_variables" else f"{mode[0]}/{mode[1]}"
    if mode[0] == "grad_norm" and mode[1] == "shared_variables":
      name = "grad_norm/shared_variables"
    rows[name] = dict(step_ms=1000 * median, examples_per_second=BATCH_SIZE.value / median,
                      ratio_to_fixed=median / fixed)
    print(f"{name:<32}{1000 * median:>18.1f}{BATCH_SIZE.value / median:>12.1f}"
          f"{median / fixed:>9.2f}")
  print("json:", json.dumps(rows))


if __name__ == "__main__":
  app.run(main)
