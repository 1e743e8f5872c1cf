"""The experiment config: one YAML file in configs/ plus overrides, as Model Garden does it.

Each section is a dataclass of its own module in this package (`data.py`, `model.py`, `train.py`,
`evaluation.py`, `search.py`, `product_search.py`); this module composes them and reads YAML.
"""

import dataclasses
import os

from official.modeling.hyperparams import base_config
from official.modeling.hyperparams import params_dict

from fashionbert_tf.configs.data import DataConfig
from fashionbert_tf.configs.evaluation import EvalConfig
from fashionbert_tf.configs.model import ModelConfig
from fashionbert_tf.configs.product_search import RetrievalConfig
from fashionbert_tf.configs.search import check_search_variant
from fashionbert_tf.configs.search import SearchConfig
from fashionbert_tf.configs.train import TrainConfig


@dataclasses.dataclass
class ExperimentConfig(base_config.Config):
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
  retrieval: RetrievalConfig = dataclasses.field(default_factory=RetrievalConfig)

  def validate(self):
    super().validate()
    self.data.validate()   # choices read only deep in the data pipeline fail here, at load time
    self.search.validate()
    self.retrieval.validate()
    check_search_variant(self.model.search_variant)


def load_config(config_file=None, overrides=()):
  """Builds an `ExperimentConfig` from defaults, a YAML file and override strings.

  Args:
    config_file: path of a YAML file (configs/*.yaml), or None for the defaults.
    overrides: iterable of strings, each either `a.b=value,c.d=value` or a YAML/JSON dict, applied
      in order (Model Garden's `params_override` syntax). Unknown keys are an error.

  Raises:
    FileNotFoundError: the config file does not exist.
    KeyError: a YAML file or override names a key the config does not have.
  """
  config = ExperimentConfig()
  if config_file:
    if not os.path.exists(config_file):
      raise FileNotFoundError(f"config file not found: {config_file}")
    config = params_dict.override_params_dict(config, config_file, is_strict=True)
  for override in overrides:
    if override:
      config = params_dict.override_params_dict(config, override, is_strict=True)
  config.validate()
  return config
