"""Exact resume: a run killed (SIGKILL) at a random checkpoint and resumed ends with the weights of
an unbroken run, on one device and on two logical CPU replicas (`train.resume_input: skip`). The
resumed run starts at the checkpoint's step and ends where the unbroken run does, and the
checkpoints carry the step and Adam's moments.
Resuming with `restart` (the input from its beginning) does not: the test can tell them apart
(checked on one device; where the input restarts does not depend on the strategy)."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.training import synthetic

from test_training_pretrain_run import DATA, latest_step, tiny_config, wait_for_checkpoint

STEPS = 15


def run_config(model_dir, strategy, resume_input="skip"):
  return tiny_config(model_dir, train_steps=STEPS, checkpoint_every_steps=3, validation_steps=0,
                     log_every_steps=1, strategy=strategy, resume_input=resume_input)


def distinct_batches():
  """A repeated dataset of 40 different global batches of 8: every step sees new data."""
  examples = synthetic.synthetic_examples(8 * 40, vocab_size=DATA["vocab_size"],
                                          feature_dim=DATA["feature_dim"], num_products=16,
                                          seed=11)
  return tf.data.Dataset.from_tensor_slices(examples).batch(8).repeat()


RUN = textwrap.dedent("""
    import sys, time
    import tensorflow as tf
    strategy, model_dir, tests_dir, resume_input, slow = sys.argv[1:6]
    if strategy == "mirrored":
      cpu = tf.config.list_physical_devices("CPU")[0]
      tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, tests_dir)
    import tf_keras
    from test_training_exact_resume import distinct_batches, run_config
    from fashionbert_tf.training import pretrain

    class Slow(tf_keras.callbacks.Callback):
      # The run to be killed: slow enough to be caught between two checkpoints.
      def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.4)

    summary = pretrain.run_pretraining(run_config(model_dir, strategy, resume_input),
                                       distinct_batches(),
                                       extra_callbacks=[Slow()] if slow == "slow" else [])
    print("STEPS", summary["first_step"], summary["final_step"])
""")


def start(strategy, model_dir, resume_input="skip", slow=False):
  return subprocess.Popen([sys.executable, "-c", RUN, strategy, model_dir,
                           os.path.dirname(__file__), resume_input, "slow" if slow else "-"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
  """Waits for a run; returns its (first step, final step) as its summary reports them."""
  stdout, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  steps = re.search(r"STEPS (\d+) (\d+)", stdout)
  assert steps, f"no step report in the run's output: {stdout[-1000:]}"
  return int(steps.group(1)), int(steps.group(2))


def model_weights(model_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  names = sorted(name for name in reader.get_variable_to_shape_map()
                 if name.startswith("model/") and "OPTIMIZER_SLOT" not in name)
  return {name: reader.get_tensor(name) for name in names}


@pytest.mark.parametrize("strategy", ["one_device", "mirrored"])
def test_killed_and_resumed_run_equals_the_unbroken_run(tmp_path, strategy):
  unbroken, killed = str(tmp_path / "unbroken"), str(tmp_path / "killed")
  reference = start(strategy, unbroken)
  victim = start(strategy, killed, slow=True)
  kill_after = random.Random().choice([3, 6, 9])
  try:
    wait_for_checkpoint(victim, killed, kill_after, timeout=240, poll=0.02)
  finally:
    victim.send_signal(signal.SIGKILL)
    victim.wait()
  killed_at = latest_step(killed)
  assert kill_after <= killed_at < STEPS
  saved = tf.train.load_checkpoint(tf.train.latest_checkpoint(killed))
  assert int(saved.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == killed_at
  assert any("OPTIMIZER_SLOT" in name for name in saved.get_variable_to_shape_map()), \
      "the optimizer's Adam moments are checkpointed"
  check_restart = strategy == "one_device"
  restarted = str(tmp_path / "restarted")
  if check_restart:
    shutil.copytree(killed, restarted)
  assert finish(reference) == (0, STEPS)
  assert finish(start(strategy, killed)) == (killed_at, STEPS)
  assert latest_step(unbroken) == latest_step(killed) == STEPS
  expected, resumed = model_weights(unbroken), model_weights(killed)
  assert expected.keys() == resumed.keys()
  for name in expected:
    np.testing.assert_allclose(resumed[name], expected[name], rtol=1e-5, atol=1e-6,
                               err_msg=f"{strategy}, killed after step {killed_at}: {name}")
  if check_restart:
    # Restarting the input feeds other batches after the resume: other weights.
    finish(start(strategy, restarted, resume_input="restart"))
    assert latest_step(restarted) == STEPS
    restarted_weights = model_weights(restarted)
    assert any(not np.allclose(restarted_weights[name], expected[name], rtol=1e-5, atol=1e-6)
               for name in expected)
