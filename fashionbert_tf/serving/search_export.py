"""Export a fine-tuned search model (paper 3.4) for TF Serving: `fashionbert export --search_run`.

Same layout and guarantees as the pretraining export (`export.py`): `<export_dir>/<version>/` with
`saved_model.pb`, `variables/`, `assets/vocab.txt`, `assets.extra/tf_serving_warmup_requests` (one
batch-1 request per signature) and `assets.extra/fashionbert_params.yaml` (the fine-tuning run's
params.yaml); written under a temporary name, renamed when complete, and removed if the graph
holds an op TF Serving's standard binary lacks (`op_allowlist.py`). Signatures:
`search_serving_module.py`.
"""

import os

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.evaluation import pretraining_run as restore_lib
from fashionbert_tf.search import click_scoring
from fashionbert_tf.search import search_model_builder
from fashionbert_tf.serving import export
from fashionbert_tf.serving import search_serving_module

MODEL_NAME = "fashionbert_search"
WARMUP_QUERY = "long sleeve navy shirt"
WARMUP_TITLE = "Studio Numpy Navy Pinstripe Shirt"


def build_search_serving_module(model, run_config):
  """A `SearchServingModule` around a restored `SearchModel` with the run's text layout."""
  text_encoder = click_scoring.query_title_encoder(run_config, model.variant)
  feature_dim = (int(model.patch_feature_extractor.feature_dim) if model.uses_image else None)
  return search_serving_module.SearchServingModule(model, text_encoder, feature_dim)


def warmup_requests(module):
  """(signature, inputs) pairs, batch 1: one per signature, as a typical online request."""
  query = np.array([WARMUP_QUERY.encode("utf-8")], dtype=object)
  title = np.array([WARMUP_TITLE.encode("utf-8")], dtype=object)
  raw = {"query": query, "title": title}
  inputs = module.text_encoder.encode(tf.constant(query), tf.constant(title))
  features = {key: inputs[key].numpy() for key in contract.TEXT_KEYS}
  if module.uses_image:
    image = np.array([export.warmup_image_png()], dtype=object)
    raw["image"] = image
    decoded = tf.expand_dims(search_serving_module.serving_module.decode_image(
        tf.constant(image[0])), 0)
    features[contract.FEATURES_KEY] = module.compute_patch_features(decoded).numpy()
  return [("serving_default", raw), ("score_features", features)]


def export_search_model(search_run, export_dir, version=None, model=None, run_config=None):
  """Restores a fine-tuning run (or takes `model` + `run_config`) and exports it.

  Args:
    search_run: the run folder (its latest checkpoint) or a checkpoint prefix.
    export_dir: base path (versions go below it).
    version: int or None (time-based).
    model, run_config: an already built `SearchModel` and its ExperimentConfig to export instead.

  Returns:
    The version folder's path.
  """
  params_yaml = None
  if model is None:
    model, run_config, path = search_model_builder.restore_search_model(search_run)
    logging.info("exporting search model %s from %s", model.variant, path)
    params_yaml = os.path.join(os.path.dirname(path), restore_lib.PARAMS_FILE)
  module = build_search_serving_module(model, run_config)
  return export.save_module(module, export_dir, version=version, params_yaml=params_yaml,
                            model_name=MODEL_NAME, requests=warmup_requests(module),
                            function_aliases=module.function_aliases())
