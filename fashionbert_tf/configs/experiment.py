"""The experiment config: one YAML file in configs/ plus overrides, as Model Garden does it.

Each section is a dataclass of its own module in this package (`data.py`, `model.py`, `train.py`,
`evaluation.py`, `search.py`, `product_search.py`); this module composes them and reads YAML.
"""

import dataclasses
import difflib
import os

from official.modeling.hyperparams import base_config
from official.modeling.hyperparams import params_dict
import yaml

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
    self.eval.validate()
    self.search.validate()
    self.retrieval.validate()
    check_search_variant(self.model.search_variant)


class UnknownConfigKeyError(KeyError):
  """A YAML file or override names a key the config does not have.

  The message is one line: the full dotted path of each unknown key, where it came from (the file,
  or the override as given) and the nearest valid keys of its section.
  """

  def __str__(self):  # KeyError's own str() would quote the message
    return str(self.args[0]) if self.args else ""


def _parse_override(override):
  """An override as Model Garden's `params_dict.override_params_dict` reads it: a dict, a
  `a.b=value,c.d=value` string, a YAML / JSON dict string, or a YAML file path -> a dict (None
  when it is none of these; Model Garden then reports it)."""
  if isinstance(override, dict):
    return override
  if not isinstance(override, str):
    return None
  text = override
  try:
    text = params_dict.nested_csv_str_to_json_str(text)
  except ValueError:
    pass
  try:
    parsed = yaml.load(text, Loader=params_dict._LOADER)  # pylint: disable=protected-access
    if not isinstance(parsed, dict) and os.path.isfile(override):
      with open(override, encoding="utf-8") as f:
        parsed = yaml.load(f, Loader=params_dict._LOADER)  # pylint: disable=protected-access
  except yaml.YAMLError:
    return None
  return parsed if isinstance(parsed, dict) else None


def _unknown_keys(config, override, prefix=""):
  """Yields `(prefix, key, valid_keys)` for each key of the nested dict `override` that `config` (a
  Model Garden `Config`) does not have, depth first, sorted; `prefix` is the dotted path of its
  section ("train.") and `valid_keys` that section's keys."""
  valid = sorted(key for key in config.as_dict() if key not in config.RESERVED_ATTR)
  for key in sorted(override, key=str):
    if key not in valid:
      yield prefix, str(key), valid
      continue
    value, current = override[key], getattr(config, key)
    if isinstance(value, dict) and isinstance(current, base_config.Config):
      yield from _unknown_keys(current, value, prefix=f"{prefix}{key}.")


def _first_leaf(override, keys):
  """The full dotted path, as typed, from the nested key `keys` (a list) of `override` down to the
  first leaf below it."""
  node = override
  for key in keys:
    node = node.get(key) if isinstance(node, dict) else None
  path = ".".join(str(key) for key in keys)
  while isinstance(node, dict) and node:
    key = sorted(node, key=str)[0]
    path, node = f"{path}.{key}", node[key]
  return path


def check_known_keys(config, override, source):
  """Raises `UnknownConfigKeyError` if `override` names a key `config` does not have.

  Args:
    config: the `ExperimentConfig` (or any Model Garden `Config`) the override applies to.
    override: what `load_config` takes as a config file or an override (see there).
    source: where it came from, for the message (e.g. "configs/x.yaml").

  Raises:
    UnknownConfigKeyError: one line, e.g. `params_override 'train.nope=3': unknown config key
      train.nope; nearest valid keys: train.seed, ...`.
  """
  parsed = _parse_override(override)
  if not parsed:
    return
  problems = []
  for section, key, valid in _unknown_keys(config, parsed):
    path = section + key
    typed = _first_leaf(parsed, section.split(".")[:-1] + [key])
    what = (f"config key {typed}" if typed == path else
            f"config key {typed} (no section {path!r})")
    nearest = difflib.get_close_matches(key, valid, n=3, cutoff=0.6) or sorted(
        valid, key=lambda name: -difflib.SequenceMatcher(None, key, name).ratio())[:3]
    nearest = [section + name for name in nearest]
    problems.append(f"unknown {what}; nearest valid keys: {', '.join(nearest)}")
  if problems:
    raise UnknownConfigKeyError(f"{source}: {'; '.join(problems)}")


def load_config(config_file=None, overrides=()):
  """Builds an `ExperimentConfig` from defaults, a YAML file and override strings.

  Args:
    config_file: path of a YAML file (configs/*.yaml), or None for the defaults.
    overrides: iterable of strings, each either `a.b=value,c.d=value` or a YAML/JSON dict, applied
      in order (Model Garden's `params_override` syntax). Unknown keys are an error.

  Raises:
    FileNotFoundError: the config file does not exist.
    UnknownConfigKeyError (a KeyError): a YAML file or override names a key the config does not
      have; the one-line message names the file or override, the key's full dotted path and the
      nearest valid keys of its section.
  """
  config = ExperimentConfig()
  if config_file:
    if not os.path.exists(config_file):
      raise FileNotFoundError(f"config file not found: {config_file}")
    check_known_keys(config, config_file, source=config_file)
    config = params_dict.override_params_dict(config, config_file, is_strict=True)
  for override in overrides:
    if override:
      source = (f"params_override {override!r}" if isinstance(override, str)
                else f"override {override!r}"[:200])
      check_known_keys(config, override, source=source)
      config = params_dict.override_params_dict(config, override, is_strict=True)
  config.validate()
  return config
