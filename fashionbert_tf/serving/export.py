"""Export a trained FashionBERT as a SavedModel for TF Serving (`fashionbert export`).

Layout TF Serving expects: `<export_dir>/<version>/` with `saved_model.pb`, `variables/`,
`assets/` (the WordPiece vocabulary) and `assets.extra/tf_serving_warmup_requests`; the version is
an integer (default: seconds since the epoch), so a newer export is picked up as a new version.
The version folder is written under a temporary name and renamed when complete, so a server
watching `<export_dir>` never loads half an export. Signatures: see `serving_module.py`.

Precision and compilation (`precision`, `jit_compile`, `length_bucket`): a float32 export
(default) is exact; a bfloat16 export scores through `fused_inference.FusedScoringModel` (the
fused inference graph: matmul weights stored as bfloat16 graph constants and multiplied in
bfloat16, LayerNorm / softmax / P(match) in float32); `jit_compile`
compiles the scoring function with XLA and pads texts to multiples of `length_bucket` positions
(default 16 under XLA) so it compiles one shape per bucket; the warm-up records then hold one
`score_features` request per bucket (batch 1), so TF Serving compiles them all at load. The
settings are written to `assets.extra/fashionbert_inference.json`.

After saving, every op of the graph and of its function library is checked against the
allowlist of ops TF Serving's standard binary has (`op_allowlist.py`); a failing export is removed.
"""

import json
import os
import shutil
import time

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import tokenization
from fashionbert_tf.evaluation import pretraining_run
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.modeling import inference_precision
from fashionbert_tf.serving import op_allowlist
from fashionbert_tf.serving import serving_module
from fashionbert_tf.serving import warmup
from fashionbert_tf.utils import inference_settings

WARMUP_TEXT = ("long sleeve cotton shirt in navy blue. spread collar. button closure at front. "
               "patch pocket at chest. tonal stitching.")
PARAMS_COPY = os.path.join("assets.extra", "fashionbert_params.yaml")


def warmup_image_png(size=contract.IMAGE_SIZE):
  """A deterministic encoded PNG (a colour gradient) for the warm-up requests."""
  ramp = np.linspace(0, 255, size, dtype=np.float32)
  image = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)),
                    np.tile(ramp[:, None], (1, size))], axis=-1)
  return tf.io.encode_png(image.astype(np.uint8)).numpy()


def build_serving_module(model, data_config, feature_dim=None, jit_compile=False,
                         length_bucket=0):
  """A `FashionBertServingModule` around `model` with the data config's tokenizer."""
  tokenizer = tokenization.build_tokenizer(data_config)
  return serving_module.FashionBertServingModule(
      model=model,
      tokenizer=tokenizer,
      feature_dim=feature_dim or pretraining_run.feature_dim_of(model),
      vocab_size=tokenizer.vocab_size,
      max_text_length=data_config.max_text_length,
      jit_compile=jit_compile,
      length_bucket=length_bucket)


def bucket_lengths(module):
  """The padded text lengths a bucketed module compiles: k, 2k, ... up to max_text_length."""
  if module.length_bucket <= 0:
    return []
  lengths = sorted({scoring.bucketed_length(length, module.length_bucket, module.max_text_length)
                    for length in range(2, module.max_text_length + 1)})
  return lengths


def warmup_requests(module):
  """(signature, inputs) pairs, batch 1: one per signature, as a typical online request; for a
  bucketed (XLA) module also one `score_features` request per further length bucket."""
  text = np.array([WARMUP_TEXT.encode("utf-8")], dtype=object)
  image = np.array([warmup_image_png()], dtype=object)
  ids, mask, types = tokenization.text_to_model_inputs(
      module.tokenizer, tf.constant(text), module.max_text_length)
  image_tensor = tf.expand_dims(serving_module.decode_image(tf.constant(image[0])), 0)
  features = module.compute_patch_features(image_tensor)
  requests = [
      ("serving_default", {"text": text, "image": image}),
      ("score_features", {"input_word_ids": ids.numpy(), "input_mask": mask.numpy(),
                          "input_type_ids": types.numpy(),
                          contract.FEATURES_KEY: features.numpy()}),
  ]
  covered = scoring.bucketed_length(int(ids.shape[1]), module.length_bucket,
                                    module.max_text_length)
  for length in bucket_lengths(module):
    if length == covered:
      continue
    # `[CLS] a a ... [SEP]` of exactly `length` positions (the tokenizer's own ids).
    row = np.full([1, length], int(ids[0, 1]), np.int32)
    row[0, 0], row[0, -1] = int(ids[0, 0]), int(ids[0, int(tf.reduce_sum(mask)) - 1])
    requests.append(("score_features", {
        "input_word_ids": row, "input_mask": np.ones_like(row),
        "input_type_ids": np.zeros_like(row), contract.FEATURES_KEY: features.numpy()}))
  return requests


def save_module(module, export_dir, version=None, params_yaml=None, model_name="fashionbert",
                check_ops=True, precision="float32", requests=None, function_aliases=None):
  """Writes `<export_dir>/<version>/` (see the module docstring) and returns its path.

  Args:
    module: a `FashionBertServingModule` (or another module with `signatures()`, e.g. the search
      model's `SearchServingModule`, passing its own `requests` and `function_aliases`).
    export_dir: the model's base path for TF Serving.
    version: positive int; None = int(time.time()). An existing version is an error.
    params_yaml: optional path of the run's params.yaml, copied into assets.extra for provenance.
    model_name: servable name written into the warm-up requests.
    check_ops: run the TF Serving op allowlist check (on by default).
    precision: recorded in `assets.extra/fashionbert_inference.json` ("float32" | "bfloat16").
    requests: warm-up (signature, inputs) pairs; None = `warmup_requests(module)`.
    function_aliases: tf.functions saved under a name (SaveOptions); None = the pretraining
      module's `compute_patch_features`.

  Raises:
    FileExistsError: the version already exists.
    ValueError: the graph uses an op TF Serving lacks (the export is removed).
  """
  version = int(version if version is not None else time.time())
  if version <= 0:
    raise ValueError(f"export version must be a positive integer, got {version}")
  final_path = os.path.join(export_dir, str(version))
  if tf.io.gfile.exists(final_path):
    raise FileExistsError(f"export version {final_path} already exists; pick another --version")
  temp_path = os.path.join(export_dir, f".tmp-{version}")
  if tf.io.gfile.exists(temp_path):
    tf.io.gfile.rmtree(temp_path)
  tf.io.gfile.makedirs(export_dir)
  started = time.time()
  try:
    if function_aliases is None:
      function_aliases = {"compute_patch_features": module.compute_patch_features}
    tf.saved_model.save(module, temp_path, signatures=module.signatures(),
                        options=tf.saved_model.SaveOptions(function_aliases=function_aliases))
    if requests is None:
      requests = warmup_requests(module)
    warmup.write_warmup_requests(temp_path, requests, model_name=model_name)
    settings_path = os.path.join(temp_path, inference_settings.INFERENCE_SETTINGS)
    with tf.io.gfile.GFile(settings_path, "w") as f:
      json.dump({"precision": precision, "jit_compile": getattr(module, "jit_compile", False),
                 "length_bucket": getattr(module, "length_bucket", None)}, f, indent=1)
    if params_yaml and tf.io.gfile.exists(params_yaml):
      tf.io.gfile.copy(params_yaml, os.path.join(temp_path, PARAMS_COPY), overwrite=True)
    if check_ops:
      op_allowlist.check_servable(temp_path)
  except BaseException:
    shutil.rmtree(temp_path, ignore_errors=True)
    raise
  tf.io.gfile.rename(temp_path, final_path)
  logging.info("exported SavedModel to %s in %.1fs", final_path, time.time() - started)
  return final_path


def export_saved_model(config, export_dir, checkpoint=None, version=None, model=None,
                       precision="float32", jit_compile=False, length_bucket=None):
  """Restores the run's model (or takes `model`) and exports it; returns the version path.

  Args:
    config: ExperimentConfig (`train.model_dir` names the run; `data` gives the vocabulary and
      the text length limit).
    export_dir: base path (versions go below it).
    checkpoint: checkpoint prefix or folder; None = latest in `train.model_dir`.
    version: int or None (time-based).
    model: an already built float32 `FashionBertModel` (built from `config.model`) to export
      instead of restoring one.
    precision: "float32" (exact) or "bfloat16" (see the module docstring).
    jit_compile: compile the scoring function with XLA.
    length_bucket: text-length bucket; None = 16 under XLA, 0 (exact VSL) without.

  Raises:
    ValueError: unknown precision or negative bucket.
  """
  precision = inference_precision.check_precision(precision, "--precision")
  length_bucket = inference_settings.resolve_length_bucket(jit_compile, length_bucket)
  params_yaml = None
  model_config = config.model
  if model is None:
    model, checkpoint_path, model_config = pretraining_run.restore_model(config, checkpoint)
    logging.info("exporting %s", checkpoint_path)
    params_yaml = os.path.join(config.train.model_dir, pretraining_run.PARAMS_FILE)
  model = inference_precision.inference_model(model, model_config, precision,
                                              jit_compile=jit_compile)
  logging.info("export: precision %s, jit_compile %s, length bucket %d", precision, jit_compile,
               length_bucket)
  module = build_serving_module(model, config.data, jit_compile=jit_compile,
                                length_bucket=length_bucket)
  return save_module(module, export_dir, version=version, params_yaml=params_yaml,
                     precision=precision)
