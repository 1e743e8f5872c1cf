"""Flags every command shares: the YAML config and overrides of single keys; the start of a
command that takes only flags; unknown config keys and missing files reported as one line."""

import contextlib

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.configs import experiment as experiment_config

CONFIG = flags.DEFINE_string(
    "config", "configs/toy.yaml", "YAML experiment config (see configs/).")
PARAMS_OVERRIDE = flags.DEFINE_multi_string(
    "params_override", [],
    "Overrides of config keys, e.g. `train.global_batch_size=32,model.num_layers=2`, or a YAML "
    "dict; may be given several times, applied in order.")


def config_from_flags():
  """The `ExperimentConfig` named by --config with every --params_override applied.

  Raises:
    app.UsageError: --config or a --params_override names a key the config does not have (one
      line naming the key's full dotted path and the nearest valid keys).
  """
  try:
    return experiment_config.load_config(CONFIG.value, PARAMS_OVERRIDE.value)
  except experiment_config.UnknownConfigKeyError as error:
    raise app.UsageError(str(error)) from None


def start_command(argv):
  """For a command that takes only flags: rejects positional arguments (UsageError), turns on INFO
  logging, returns `config_from_flags()`."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  return config_from_flags()


@contextlib.contextmanager
def missing_files_as_usage_error():
  """A FileNotFoundError raised inside (missing logs, images or checkpoints: the project's checks
  name the path) becomes an `app.UsageError` with its message: one line, no traceback."""
  try:
    yield
  except FileNotFoundError as error:
    raise app.UsageError(str(error)) from None
