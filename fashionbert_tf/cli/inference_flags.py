"""Precision and compilation flags shared by `fashionbert export` and `fashionbert evaluate`.

  --precision float32|bfloat16   float32 = exact (default); bfloat16 = weights and matmuls in
                                 bfloat16, LayerNorm / softmax / P(match) in float32
                                 (`fashionbert_tf/modeling/inference_precision.py`)
  --jit_compile                  compile the scoring function with XLA
  --length_bucket N              pad texts to multiples of N positions (-1 = 16 under XLA, else 0)
For `evaluate` they override `eval.mixed_precision`, `eval.jit_compile` and `eval.length_bucket`
(unset = the config's value).
"""

from absl import flags

from fashionbert_tf.modeling import inference_precision

PRECISION = flags.DEFINE_enum(
    "precision", None, ["float32", "bfloat16", "mixed_bfloat16"],
    "Inference precision: float32 (exact) or bfloat16 (mixed_bfloat16 is the same); default: "
    "float32 for export, eval.mixed_precision for evaluate.")
JIT_COMPILE = flags.DEFINE_bool(
    "jit_compile", None, "Compile the scoring function with XLA; default: off for export, "
    "eval.jit_compile for evaluate.")
LENGTH_BUCKET = flags.DEFINE_integer(
    "length_bucket", None, "Pad texts to multiples of this many positions (-1 = 16 under "
    "--jit_compile, exact VSL otherwise; 0 = never); default -1 / eval.length_bucket.")


def any_given():
  return any(flag.value is not None for flag in (PRECISION, JIT_COMPILE, LENGTH_BUCKET))


def export_settings():
  """(precision, jit_compile, length_bucket) for `export_saved_model` from the flags."""
  precision = inference_precision.check_precision(PRECISION.value or "float32", "--precision")
  length_bucket = -1 if LENGTH_BUCKET.value is None else LENGTH_BUCKET.value
  if length_bucket < -1:
    raise ValueError(f"--length_bucket must be >= -1, got {length_bucket}")
  return precision, bool(JIT_COMPILE.value), length_bucket


def apply_to_eval_config(config):
  """Writes the given flags into `config.eval` (in place); unset flags leave the config alone."""
  if PRECISION.value is not None:
    config.eval.mixed_precision = inference_precision.check_precision(PRECISION.value,
                                                                      "--precision")
  if JIT_COMPILE.value is not None:
    config.eval.jit_compile = JIT_COMPILE.value
  if LENGTH_BUCKET.value is not None:
    if LENGTH_BUCKET.value < -1:
      raise ValueError(f"--length_bucket must be >= -1, got {LENGTH_BUCKET.value}")
    config.eval.length_bucket = LENGTH_BUCKET.value
  return config
