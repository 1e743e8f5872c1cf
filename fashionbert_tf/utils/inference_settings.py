"""The inference settings an export records next to its SavedModel, and the text-length bucket.

An export writes its precision, XLA setting and length bucket to `INFERENCE_SETTINGS` (JSON) so
that evaluating the export later scores it the way it was built.
"""

import json
import os

import tensorflow as tf

INFERENCE_SETTINGS = os.path.join("assets.extra", "fashionbert_inference.json")
# Text-length bucket under XLA when none is given: multiples of 16 positions (448 / 16 = 28 shapes).
DEFAULT_JIT_LENGTH_BUCKET = 16


def resolve_length_bucket(jit_compile, length_bucket=None):
  """The text-length bucket to use: `length_bucket` if >= 0, else (None or -1) 16 under XLA and
  0 (exact VSL) without.

  Raises:
    ValueError: a bucket below -1.
  """
  if length_bucket is None or int(length_bucket) == -1:
    return DEFAULT_JIT_LENGTH_BUCKET if jit_compile else 0
  if int(length_bucket) < 0:
    raise ValueError(f"length_bucket must be >= 0 (0 = no bucketing) or -1 (automatic), got "
                     f"{length_bucket}")
  return int(length_bucket)


def read_inference_settings(export_path):
  """{"precision", "jit_compile", "length_bucket"} of an export (float32 defaults when absent)."""
  path = os.path.join(export_path, INFERENCE_SETTINGS)
  if not tf.io.gfile.exists(path):
    return {"precision": "float32", "jit_compile": False, "length_bucket": 0}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)
