"""`train.init_checkpoint`: a fresh run starts its model from another run's checkpoint, with its
own optimizer, step and schedule; a resumed run ignores it; a checkpoint of another model, or none,
is a clear error."""

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.training import pretrain
from test_training_pretrain_run import datasets, tiny_config


def model_variables(checkpoint_path):
  """{name: value} of the model's variables in a training checkpoint (no optimizer slots)."""
  reader = tf.train.load_checkpoint(checkpoint_path)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name.startswith("model/") and "OPTIMIZER_SLOT" not in name}


def step_of(checkpoint_path):
  reader = tf.train.load_checkpoint(checkpoint_path)
  return int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  """A finished 4-step run: (model_dir, its last checkpoint)."""
  model_dir = str(tmp_path_factory.mktemp("first") / "run")
  summary = pretrain.run_pretraining(
      tiny_config(model_dir, train_steps=4, validation_steps=0), *datasets())
  return model_dir, summary["checkpoint"]


def test_warm_start_takes_the_weights_and_starts_the_step_afresh(first_run, tmp_path):
  first_dir, first_checkpoint = first_run
  model_dir = str(tmp_path / "warm")
  # Learning rate 0: the warm-started run's weights stay exactly those it started from.
  config = tiny_config(model_dir, train_steps=3, checkpoint_every_steps=3, validation_steps=0,
                       learning_rate=0.0, init_checkpoint=first_dir)
  summary = pretrain.run_pretraining(config, *datasets())
  assert summary["init_checkpoint"] == first_checkpoint
  assert summary["first_step"] == 0 and summary["final_step"] == 3
  assert step_of(summary["checkpoint"]) == 3          # its own step, not 4 + 3
  started_from = model_variables(first_checkpoint)
  warm = model_variables(summary["checkpoint"])
  assert set(warm) == set(started_from)
  for name, value in started_from.items():
    np.testing.assert_array_equal(warm[name], value, err_msg=name)

  # The same run from scratch (no init_checkpoint) has other weights: the warm start did it.
  fresh = pretrain.run_pretraining(
      tiny_config(str(tmp_path / "fresh"), train_steps=3, checkpoint_every_steps=3,
                  validation_steps=0, learning_rate=0.0), *datasets())
  fresh_variables = model_variables(fresh["checkpoint"])
  assert any(not np.array_equal(fresh_variables[name], value)
             for name, value in started_from.items())


def test_a_warm_start_trains_from_the_checkpoint(first_run, tmp_path):
  first_dir, first_checkpoint = first_run
  config = tiny_config(str(tmp_path / "warm"), train_steps=2, checkpoint_every_steps=2,
                       validation_steps=0, init_checkpoint=first_checkpoint)
  summary = pretrain.run_pretraining(config, *datasets())
  started_from = model_variables(first_checkpoint)
  trained = model_variables(summary["checkpoint"])
  changed = [name for name, value in started_from.items()
             if not np.array_equal(trained[name], value)]
  assert changed, "two steps at learning rate 1e-3 changed nothing"
  # Adam's moments start at zero: after 2 steps they are not the 4-step run's.
  reader = tf.train.load_checkpoint(summary["checkpoint"])
  first_reader = tf.train.load_checkpoint(first_checkpoint)
  slots = [name for name in reader.get_variable_to_shape_map() if "OPTIMIZER_SLOT" in name]
  assert slots
  assert any(not np.array_equal(reader.get_tensor(name), first_reader.get_tensor(name))
             for name in slots)


def test_a_resumed_run_ignores_init_checkpoint(first_run, tmp_path):
  first_dir, _ = first_run
  model_dir = str(tmp_path / "warm")
  config = tiny_config(model_dir, train_steps=2, checkpoint_every_steps=2, validation_steps=0,
                       init_checkpoint=first_dir)
  pretrain.run_pretraining(config, *datasets())
  # Resuming to step 4: from the run's own ckpt-2, even with init_checkpoint now pointing nowhere.
  resumed = pretrain.run_pretraining(
      tiny_config(model_dir, train_steps=4, checkpoint_every_steps=2, validation_steps=0,
                  init_checkpoint=str(tmp_path / "nowhere")), *datasets())
  assert resumed["first_step"] == 2 and resumed["final_step"] == 4
  assert resumed["init_checkpoint"] is None


def test_a_checkpoint_of_another_model_is_an_error_naming_it(first_run, tmp_path):
  first_dir, first_checkpoint = first_run
  for model_change in (dict(num_layers=2), dict(hidden_size=48, intermediate_size=96)):
    config = tiny_config(str(tmp_path / f"other{len(model_change)}"), train_steps=2,
                         validation_steps=0, init_checkpoint=first_dir)
    config = config.replace(model=model_change)
    with pytest.raises(ValueError, match="train.init_checkpoint=.*ckpt-4 does not fit"):
      pretrain.run_pretraining(config, *datasets())


def test_a_missing_init_checkpoint_is_an_error_naming_the_option(tmp_path):
  config = tiny_config(str(tmp_path / "warm"), train_steps=2, validation_steps=0,
                       init_checkpoint=str(tmp_path / "nowhere" / "ckpt-7"))
  with pytest.raises(FileNotFoundError, match="train.init_checkpoint=.*nowhere"):
    pretrain.run_pretraining(config, *datasets())


def test_cli_reports_a_bad_init_checkpoint_as_a_usage_error(first_run, tmp_path, run_cli):
  from absl import app  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.cli import pretrain as pretrain_cli  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.training import trainer  # pylint: disable=g-import-not-at-top
  first_dir, _ = first_run
  for name, init_checkpoint, model_change, message in (
      ("missing", str(tmp_path / "nowhere"), {}, "train.init_checkpoint=.*nowhere: no checkpoint"),
      ("other", first_dir, dict(num_layers=2), "train.init_checkpoint=.*ckpt-4 does not fit")):
    config = tiny_config(str(tmp_path / name), init_checkpoint=init_checkpoint).replace(
        model=model_change)
    config_file = trainer.save_params(config, str(tmp_path / f"{name}_config"))
    with pytest.raises(app.UsageError, match=message):
      run_cli(pretrain_cli, ["pretrain", f"--config={config_file}"])
