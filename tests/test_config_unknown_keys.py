"""A mistyped config key (in --params_override or a YAML file) is one line naming the key's full
dotted path and the nearest valid keys of its section, never a Model Garden traceback."""

import os
import subprocess
import sys

import pytest

from fashionbert_tf.configs import experiment as experiment_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_keys():
  return {f"train.{key}" for key in experiment_config.ExperimentConfig().train.as_dict()}


def _nearest(message):
  """The keys after the last 'nearest valid keys: ' of a message."""
  return message.rsplit("nearest valid keys: ", 1)[1].split(", ")


def test_unknown_override_key_names_its_dotted_path_and_close_keys():
  with pytest.raises(experiment_config.UnknownConfigKeyError) as raised:
    experiment_config.load_config(None, ["train.train_step=3"])
  message = str(raised.value)
  assert "\n" not in message
  assert message.startswith("params_override 'train.train_step=3': unknown config key "
                            "train.train_step;"), message
  assert _nearest(message)[0] == "train.train_steps", message
  assert set(_nearest(message)) <= _train_keys(), message
  assert isinstance(raised.value, KeyError)  # callers that caught Model Garden's KeyError still do


def test_unknown_key_without_a_close_match_still_lists_the_sections_nearest():
  with pytest.raises(experiment_config.UnknownConfigKeyError) as raised:
    experiment_config.load_config(None, ["train.seed=1,train.nope=3"])
  nearest = _nearest(str(raised.value))
  assert "unknown config key train.nope;" in str(raised.value)
  assert len(nearest) == 3 and set(nearest) <= _train_keys(), nearest


def test_mistyped_section_is_named_with_the_sections_nearest_to_it():
  with pytest.raises(experiment_config.UnknownConfigKeyError) as raised:
    experiment_config.load_config(None, ["trian.train_steps=3"])
  message = str(raised.value)
  assert "unknown config key trian.train_steps (no section 'trian')" in message, message
  assert _nearest(message) == ["train"], message


def test_every_unknown_key_of_a_dict_override_is_named():
  with pytest.raises(experiment_config.UnknownConfigKeyError) as raised:
    experiment_config.load_config(None, [{"model": {"num_layer": 2}, "data": {"vocab": "v.txt"}}])
  message = str(raised.value)
  assert "unknown config key data.vocab; nearest valid keys: data.vocab_file" in message, message
  assert "unknown config key model.num_layer; nearest valid keys: model.num_layers" in message


def test_unknown_key_in_a_yaml_file_names_the_file(tmp_path):
  config_file = tmp_path / "mistyped.yaml"
  config_file.write_text("train:\n  seed: 4\n  sed: 3\nmodel:\n  num_layers: 2\n")
  with pytest.raises(experiment_config.UnknownConfigKeyError) as raised:
    experiment_config.load_config(str(config_file))
  message = str(raised.value)
  assert message.startswith(f"{config_file}: unknown config key train.sed;"), message
  assert _nearest(message)[0] == "train.seed", message


def test_known_keys_still_apply():
  config = experiment_config.load_config(
      os.path.join(REPO_ROOT, "configs", "toy.yaml"),
      ["train.train_steps=7", {"model": {"num_layers": 2}}])
  assert config.train.train_steps == 7 and config.model.num_layers == 2


def test_cli_reports_mistyped_keys_in_one_line():
  """The CLI loads the config first: bad keys fail before any data or model is touched, as one
  usage line (exit status 1) naming every bad key with the nearest valid ones, no traceback."""
  override = "train.nope=3,trian.steps=3"
  result = subprocess.run(
      [sys.executable, "-m", "fashionbert_tf.cli.main", "pretrain", "--config", "configs/toy.yaml",
       "--params_override", override],
      capture_output=True, text=True, timeout=300, check=False, cwd=REPO_ROOT)
  assert result.returncode != 0, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if "train.nope" in line]
  assert len(lines) == 1, result.stderr[-2000:]
  line = lines[0]
  assert line.startswith(f"fashionbert pretrain: params_override '{override}': "), line
  assert "one absl app per command" not in result.stderr   # no usage text around the line
  nope, trian = line.split("; unknown ")  # keys are reported sorted: train.nope, then trian.steps
  assert "unknown config key train.nope; nearest valid keys: train." in nope, line
  assert set(_nearest(nope)) <= _train_keys(), line
  assert trian == "config key trian.steps (no section 'trian'); nearest valid keys: train", line
