"""Faults a long search fine-tuning run meets, handled by the trainer as in pre-training: a user's
Ctrl-C (SIGINT: checkpoint the current step, stop, resume exactly; pre-training's test sends
SIGTERM, test_training_preemption.py both), a non-finite batch (`train.on_nonfinite`: stop, or
skip it without touching the weights).

The pretrained model has no dropout, so a fine-tuning step is a function of the weights and the
batch alone and a resumed run can be compared with an unbroken one weight for weight.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from official.modeling.hyperparams import params_dict

from fashionbert_tf.search import finetune
from fashionbert_tf.training import nonfinite
from fashionbert_tf.training import trainer

from test_search_finetune import make_setup, search_config
from test_training_pretrain_run import latest_step, scalar_tags, signal_after_checkpoint

STEPS = 12


@pytest.fixture(scope="module")
def setup(toy_data_config, tmp_path_factory):
  return make_setup(toy_data_config, str(tmp_path_factory.mktemp("search_faults")),
                    "model.dropout_rate=0.0,model.attention_dropout_rate=0.0")


def run_config(setup, model_dir, *overrides, steps=STEPS):
  return search_config(setup, "fashionbert", f"train.model_dir={model_dir}",
                       "train.checkpoint_every_steps=2", *overrides, steps=steps)


def model_weights(checkpoint_path, slots=False):
  """{name: value} of the model's variables in a checkpoint (with the Adam moments if `slots`)."""
  reader = tf.train.load_checkpoint(checkpoint_path)
  return {name: reader.get_tensor(name) for name in sorted(reader.get_variable_to_shape_map())
          if name.startswith("model/") and (slots or "OPTIMIZER_SLOT" not in name)}


@pytest.fixture(scope="module")
def unbroken(setup, tmp_path_factory):
  """The weights of an unbroken STEPS-step fine-tuning run."""
  model_dir = str(tmp_path_factory.mktemp("unbroken") / "run")
  summary = finetune.run_finetuning(run_config(setup, model_dir))
  assert summary["final_step"] == STEPS and summary["interrupted_by"] is None
  return model_weights(summary["checkpoint"])


SIGNALLED_RUN = textwrap.dedent("""
    import sys, time
    import tf_keras
    from fashionbert_tf.configs import experiment as experiment_config
    from fashionbert_tf.search import finetune

    class Slow(tf_keras.callbacks.Callback):
      # Slow enough to be signalled well before the last step.
      def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.3)

    summary = finetune.run_finetuning(experiment_config.load_config(sys.argv[1]),
                                      extra_callbacks=[Slow()])
    print("INTERRUPTED_BY", summary["interrupted_by"], summary["final_step"])
""")


def test_sigint_saves_the_current_step_and_the_resumed_run_equals_the_unbroken_one(
    setup, unbroken, tmp_path):
  signal_number = signal.SIGINT
  model_dir = str(tmp_path / "run")
  config = run_config(setup, model_dir)
  config_file = str(tmp_path / "config.yaml")
  params_dict.save_params_dict_to_yaml(config, config_file)
  process = subprocess.Popen([sys.executable, "-c", SIGNALLED_RUN, config_file],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  stopped_at, checkpoint, stdout = signal_after_checkpoint(process, model_dir, 2, signal_number,
                                                           timeout=240)
  name = signal.Signals(signal_number).name
  assert 2 <= stopped_at < STEPS
  assert f"INTERRUPTED_BY {name} {stopped_at}" in stdout
  assert checkpoint.endswith(f"ckpt-{stopped_at}") and latest_step(model_dir) == stopped_at
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == stopped_at

  summary = finetune.run_finetuning(config)   # the same command again
  assert summary["first_step"] == stopped_at and summary["final_step"] == STEPS
  assert summary["interrupted_by"] is None
  resumed = model_weights(summary["checkpoint"])
  assert resumed.keys() == unbroken.keys()
  for variable in unbroken:
    np.testing.assert_allclose(resumed[variable], unbroken[variable], rtol=1e-5, atol=1e-6,
                               err_msg=f"{name} at step {stopped_at}: {variable}")


class NanProductTask(finetune.FinetuningTask):
  """Fine-tuning whose catalogue holds NaN patch features for one product (a corrupt feature
  row): every batch with one of its impressions has a NaN loss. The product is one that the first
  batch does not show and a few later batches (`nan_steps`, 1-based) do."""

  def prepare_training(self, strategy, first_step):
    super().prepare_training(strategy, first_step)
    train_config = self.config.train
    batches = finetune.training_dataset(self.train_arrays, train_config.global_batch_size,
                                        train_config.seed).take(train_config.train_steps)
    rows = [set(batch["product_row"].numpy().tolist()) for batch in batches]
    steps_of = {row: [step + 1 for step, shown in enumerate(rows) if row in shown]
                for row in set().union(*rows) - rows[0]}
    nan_row = min(steps_of, key=lambda row: (len(steps_of[row]), row))
    self.nan_steps = steps_of[nan_row]
    features = self.feature_table.numpy()
    features[nan_row] = np.nan
    self.feature_table.assign(features)


def nan_run(setup, model_dir, on_nonfinite):
  config = run_config(setup, model_dir, "search.validation_query_fraction=0.0",
                      "train.checkpoint_every_steps=1,train.max_checkpoints_to_keep=20",
                      f"train.on_nonfinite={on_nonfinite}", steps=8)
  task = NanProductTask(config)
  return task, trainer.Trainer(task)


def test_skip_batch_applies_no_update_and_counts_the_batch(setup, tmp_path, caplog):
  model_dir = str(tmp_path / "run")
  task, run = nan_run(setup, model_dir, "skip_batch")
  summary = run.run()
  assert task.nan_steps and task.nan_steps[0] > 1
  assert summary["final_step"] == 8 and summary["skipped_batches"] == len(task.nan_steps)
  with open(os.path.join(model_dir, "finetune_summary.json"), encoding="utf-8") as handle:
    assert json.load(handle)["skipped_batches"] == len(task.nan_steps)
  assert "skipped_batches" in scalar_tags(os.path.join(model_dir, "train"))
  warned = [int(step) for step in re.findall(r"step (\d+): non-finite values \(loss nan",
                                             caplog.text)]
  assert warned == task.nan_steps
  assert np.isfinite(summary["train_logs"]["loss"])   # the skipped losses are not averaged in
  # Checkpoints of every step: a skipped step leaves weights and Adam moments as they were (only
  # the step count moves on); every other step changes them.
  previous = None
  for step in range(1, 9):
    weights = model_weights(os.path.join(model_dir, f"ckpt-{step}"), slots=True)
    assert all(np.all(np.isfinite(value)) for value in weights.values()), step
    if previous is not None:
      unchanged = all(np.array_equal(previous[name], weights[name]) for name in weights)
      assert unchanged == (step in task.nan_steps), step
    previous = weights


def test_stop_names_the_step_and_keeps_the_last_good_checkpoint(setup, tmp_path):
  model_dir = str(tmp_path / "run")
  task, run = nan_run(setup, model_dir, "stop")
  with pytest.raises(nonfinite.NonFiniteLossError, match=r"step (\d+): loss nan") as raised:
    run.run()
  first_nan = task.nan_steps[0]
  assert f"non-finite values at step {first_nan}:" in str(raised.value)
  assert latest_step(model_dir) == first_nan - 1
  weights = model_weights(tf.train.latest_checkpoint(model_dir), slots=True)
  assert all(np.all(np.isfinite(value)) for value in weights.values())
