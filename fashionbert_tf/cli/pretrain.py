"""`fashionbert pretrain`: pre-train FashionBERT (MLM + MPM + TIA with the adaptive loss).

  fashionbert pretrain --config configs/toy.yaml \\
      [--params_override train.loss_weighting=fixed,train.train_steps=100]

  fashionbert pretrain --config runs/authors/params.yaml \\
      --authors_train_files fashionbert_fashiongen_patch_train_1K \\
      --params_override train.validation_steps=0       # the authors' training sample

Writes `<train.model_dir>/params.yaml`, checkpoints `ckpt-N`, TensorBoard logs in `train/` and
`validation/`; re-running on the same model_dir resumes from the last checkpoint. SIGTERM / SIGINT
save a checkpoint after the current step and exit with status 128 + the signal number (143 / 130).

  fashionbert pretrain --config configs/toy.yaml \\
      --params_override train.model_dir=runs/next,train.init_checkpoint=runs/toy/ckpt-1100

starts a new run from another run's weights, its optimizer and schedule afresh (a warm start,
training/warm_start.py).
"""

import json

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.cli import common_flags
from fashionbert_tf.data import easytransfer_files
from fashionbert_tf.training import preemption
from fashionbert_tf.training import pretrain
from fashionbert_tf.training import warm_start

AUTHORS_TRAIN_FILES = flags.DEFINE_string(
    "authors_train_files", None,
    "Train on the authors' training files (EasyTransfer format, e.g. "
    "fashionbert_fashiongen_patch_train_1K; comma-separated paths / globs / a .list_csv) instead "
    "of our records: precomputed features, fed raw (data/easytransfer_files.py).")
AUTHORS_VALIDATION_FILES = flags.DEFINE_string(
    "authors_validation_files", None,
    "Validation files in the same format (needed when train.validation_steps > 0).")
AUTHORS_TRAIN_SCHEMA = flags.DEFINE_string(
    "authors_train_schema", None, "Input schema of those files; default theirs.")


def _authors_datasets(config):
  """(train, validation) dataset functions over the authors' files (or raises UsageError)."""
  schema = AUTHORS_TRAIN_SCHEMA.value or easytransfer_files.TRAIN_SCHEMA
  try:
    feature_dim = easytransfer_files.check_schema(
        easytransfer_files.parse_schema(schema), easytransfer_files.TRAIN_FIELDS, "the schema")
    train_paths = easytransfer_files.expand_paths(AUTHORS_TRAIN_FILES.value)
    validation_paths = (easytransfer_files.expand_paths(AUTHORS_VALIDATION_FILES.value)
                        if AUTHORS_VALIDATION_FILES.value else None)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  model = config.model
  if not model.use_precomputed_features or model.patch_feature_normalization != "none":
    raise app.UsageError("the authors' files hold raw precomputed features: set "
                         "model.use_precomputed_features=true,model.patch_feature_normalization="
                         "none (an imported run's params.yaml has both)")
  if model.feature_dim != feature_dim:
    raise app.UsageError(f"model.feature_dim={model.feature_dim} but the files hold "
                         f"{feature_dim}-d patch features")
  if config.train.validation_steps > 0 and not validation_paths:
    raise app.UsageError("give --authors_validation_files or train.validation_steps=0")
  batch = config.train.global_batch_size
  train = lambda: easytransfer_files.training_dataset(  # pylint: disable=g-long-lambda
      train_paths, batch, schema, shuffle_buffer=config.data.shuffle_buffer,
      seed=config.data.seed)
  validation = None
  if validation_paths:
    validation = lambda: easytransfer_files.training_dataset(  # pylint: disable=g-long-lambda
        validation_paths, batch, schema, shuffle_buffer=0)
  return train, validation


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config = common_flags.config_from_flags()
  train_dataset = validation_dataset = None
  if AUTHORS_TRAIN_FILES.value:
    train_dataset, validation_dataset = _authors_datasets(config)
  try:
    with common_flags.missing_files_as_usage_error():   # data, checkpoints, vocab
      summary = pretrain.run_pretraining(config, train_dataset=train_dataset,
                                         validation_dataset=validation_dataset)
  except warm_start.CheckpointMismatchError as error:
    raise app.UsageError(str(error)) from None
  print(json.dumps({key: summary[key] for key in (
      "model_dir", "first_step", "final_step", "stopped_early", "elapsed_seconds",
      "examples_per_second", "train_logs", "validation_logs", "checkpoint", "init_checkpoint",
      "skipped_batches", "interrupted_by")}, indent=2))
  preemption.exit_if_interrupted(summary, "fashionbert pretrain")
