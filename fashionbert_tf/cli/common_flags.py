"""Flags every command shares: the YAML config and overrides of single keys."""

from absl import flags

from fashionbert_tf import experiment_config

CONFIG = flags.DEFINE_string(
    "config", "configs/toy.yaml", "YAML experiment config (see configs/).")
PARAMS_OVERRIDE = flags.DEFINE_multi_string(
    "params_override", [],
    "Overrides of config keys, e.g. `train.global_batch_size=32,model.num_layers=2`, or a YAML "
    "dict; may be given several times, applied in order.")


def config_from_flags():
  """The `ExperimentConfig` named by --config with every --params_override applied."""
  return experiment_config.load_config(CONFIG.value, PARAMS_OVERRIDE.value)
