"""The authors' released FashionBERT (EasyTransfer, TF1 checkpoint) -> a FashionBERT run directory.

`modeling/checkpoints/easytransfer.py` reads and maps the checkpoint; this module writes the run
directory (params.yaml + `ckpt-<global_step>`, as `fashionbert pretrain` writes) in a temporary
folder beside the output and renames it into place at the end, so nothing is half-written. The
checkpoint holds what pretrain's holds (model, optimizer, step, early stopping) with the optimizer
fresh (step 0, no Adam moments): `fashionbert pretrain` on the run (or a copy) continues from the
authors' weights as a warm start, the learning-rate schedule from its beginning.
"""

import json
import os
import shutil
import tempfile

from absl import logging
import tensorflow as tf

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.modeling.checkpoints import easytransfer
from fashionbert_tf.training import callbacks as callbacks_lib
from fashionbert_tf.training import pretrain
from fashionbert_tf.training import trainer


def import_checkpoint(checkpoint_path, output_dir, config_file=None, overrides=(),
                      num_attention_heads=0):
  """Writes a run directory for the released checkpoint at `checkpoint_path`.

  Args:
    checkpoint_path: TF1 checkpoint prefix (`.../model.ckpt-54198`) or its folder.
    output_dir: the run directory to create (must not exist, or be empty).
    config_file: optional YAML config whose data / train / eval sections the run takes (the
      model section is the checkpoint's).
    overrides: override strings applied to it (before the model keys are set).
    num_attention_heads: 0 = H / 64.

  Returns:
    dict: output_dir, checkpoint (the written prefix), step, variables, skipped, model (the
    model config keys set).

  Raises:
    FileNotFoundError: no checkpoint.
    FileExistsError: `output_dir` exists and is not empty.
    CheckpointMismatchError: the checkpoint does not fit (one line listing what does not).
  """
  output_dir = os.path.abspath(output_dir)
  if tf.io.gfile.exists(output_dir) and tf.io.gfile.listdir(output_dir):
    raise FileExistsError(f"--output {output_dir} exists and is not empty; choose a new folder")
  checkpoint = easytransfer.read_checkpoint(checkpoint_path)
  model_keys, missing, unexpected = easytransfer.describe_checkpoint(checkpoint,
                                                                  num_attention_heads)
  config = experiment_config.load_config(config_file, overrides)
  config.override({"model": model_keys, "train": {"model_dir": output_dir}}, is_strict=True)
  config.validate()
  # The objects `fashionbert pretrain` checkpoints, so that it can continue from the import.
  model, optimizer, _, step = pretrain.build_training_objects(config, tf.distribute.get_strategy())
  count = easytransfer.assign_checkpoint(model, checkpoint, missing, unexpected)
  early_stopping = callbacks_lib.EarlyStopping(config.train.early_stopping_patience,
                                               config.train.early_stopping_min_delta)

  parent = os.path.dirname(output_dir)
  tf.io.gfile.makedirs(parent)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.importing-", dir=parent)
  try:
    trainer.save_params(config, staging)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, optimizer=optimizer, step=step,
                            early_stopping=early_stopping),
        staging, max_to_keep=1, checkpoint_name="ckpt")
    written = manager.save(checkpoint_number=checkpoint.global_step)
    provenance = dict(format="easytransfer", source=checkpoint.source,
                      global_step=checkpoint.global_step, variables=count,
                      scopes_stripped=sorted(checkpoint.prefixes),
                      training_state_left_alone=len(checkpoint.skipped))
    with tf.io.gfile.GFile(os.path.join(staging, "imported_from.json"), "w") as f:
      json.dump(provenance, f, indent=2, sort_keys=True)
    if tf.io.gfile.exists(output_dir):
      tf.io.gfile.rmtree(output_dir)  # empty (checked above)
    os.rename(staging, output_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  written = os.path.join(output_dir, os.path.basename(written))
  logging.info("imported %s -> %s (%d variables, step %d)", checkpoint.source, written, count,
               checkpoint.global_step)
  return dict(output_dir=output_dir, checkpoint=written, step=checkpoint.global_step,
              variables=count, skipped=len(checkpoint.skipped), model=model_keys)
