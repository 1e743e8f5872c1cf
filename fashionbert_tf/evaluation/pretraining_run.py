"""Rebuild a trained FashionBERT from its run directory.

`<train.model_dir>/params.yaml` holds the ExperimentConfig the run used; checkpoints `ckpt-N` come
from a `tf.train.CheckpointManager` over `tf.train.Checkpoint(model=..., optimizer=..., step=...)`.
The model is rebuilt from the run's own `model` section (so a YAML edited after training cannot
change the architecture) and restored with `tf.train.Checkpoint(model=model)`; the optimizer slots
and step are not needed (`expect_partial`), but every model variable must come from the checkpoint.
"""

import os

from absl import logging
import tensorflow as tf

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.modeling import model_builder

PARAMS_FILE = "params.yaml"


def run_config(config):
  """The run's own ExperimentConfig (`<model_dir>/params.yaml`) if it exists, else `config`."""
  path = os.path.join(config.train.model_dir, PARAMS_FILE)
  if tf.io.gfile.exists(path):
    return experiment_config.load_config(path)
  logging.warning("%s not found: building the model from the given config", path)
  return config


def resolve_checkpoint(model_dir, checkpoint=None):
  """A checkpoint prefix: `checkpoint` itself, the latest in it if it is a folder, or the latest
  in `model_dir`.

  Raises:
    FileNotFoundError: no checkpoint there.
  """
  where = checkpoint or model_dir
  if tf.io.gfile.isdir(where):
    path = tf.train.latest_checkpoint(where)
    if path is None:
      raise FileNotFoundError(f"no checkpoint (ckpt-N) in {where}; train first or pass "
                              "--checkpoint=<prefix>")
    return path
  if not tf.io.gfile.glob(where + ".index"):
    raise FileNotFoundError(f"checkpoint {where} not found (no {where}.index)")
  return where


def restore_model(config, checkpoint=None):
  """Builds the run's model and restores its weights.

  Args:
    config: an ExperimentConfig; its `train.model_dir` names the run.
    checkpoint: a checkpoint prefix or folder; None = the latest in `train.model_dir`.

  Returns:
    (model, checkpoint path, the model config used).

  Raises:
    FileNotFoundError: no checkpoint.
    AssertionError: a model variable has no value in the checkpoint (the message names it).
  """
  path = resolve_checkpoint(config.train.model_dir, checkpoint)
  model_config = run_config(config).model
  model = model_builder.build_fashionbert(model_config)
  status = tf.train.Checkpoint(model=model).restore(path).expect_partial()
  status.assert_existing_objects_matched()
  logging.info("restored FashionBERT from %s", path)
  return model, path, model_config


def feature_dim_of(model):
  """D, the size of the model's patch features."""
  return int(model.patch_feature_extractor.feature_dim)
