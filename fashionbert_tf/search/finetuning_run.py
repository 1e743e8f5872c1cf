"""Restore a fine-tuned search model from its run folder (`fashionbert finetune`'s model_dir).

The run's params.yaml holds the full config it trained with, its `model` section being the search
model's own (`model_builder.search_model_config`: the pretraining run's model section with the
variant and layer count), so the architecture is rebuilt from it alone; the pretraining
checkpoint is not read. Checkpoints are `tf.train.Checkpoint(model=SearchModel, optimizer=...,
step=...)`; the model alone is restored (`expect_partial`), every model variable must be there.
"""

import os

from absl import logging
import tensorflow as tf

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.evaluation import pretraining_run as restore_lib
from fashionbert_tf.search import model_builder


def restore_search_model(where):
  """(SearchModel, the run's ExperimentConfig, checkpoint path) of a run folder or a prefix.

  Raises:
    FileNotFoundError: no checkpoint or no params.yaml.
    AssertionError: a model variable is missing from the checkpoint.
  """
  path = restore_lib.resolve_checkpoint(where, where)
  params = os.path.join(os.path.dirname(path), restore_lib.PARAMS_FILE)
  if not tf.io.gfile.exists(params):
    raise FileNotFoundError(f"{params} not found: not a fine-tuning run folder")
  config = experiment_config.load_config(params)
  model, _ = model_builder.build_search_architecture(config.model, config.search)
  status = tf.train.Checkpoint(model=model).restore(path).expect_partial()
  status.assert_existing_objects_matched()
  logging.info("restored search model %s (%d layers) from %s", config.model.search_variant,
               model.encoder.num_layers, path)
  return model, config, path
