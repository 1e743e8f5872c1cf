"""`run_pretraining`: run directory (params.yaml, checkpoints, TensorBoard), early stopping, and the
helpers the resume and fault tests share (test_training_exact_resume.py: resume after a kill)."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.training import pretrain
from fashionbert_tf.training import synthetic

DATA = dict(vocab_size=40, feature_dim=8, num_examples=32, num_products=2)


def tiny_config(model_dir, **train):
  # grad_norm with the cheap scope keeps tracing short; the full scope is tested elsewhere.
  train = dict(dict(model_dir=model_dir, train_steps=12, global_batch_size=8, warmup_steps=2,
                    learning_rate=1e-3, checkpoint_every_steps=4, validation_every_steps=6,
                    validation_steps=2, log_every_steps=3, grad_norm_scope="sequence_output"),
               **train)
  model = dict(synthetic.tiny_model_overrides(), num_layers=1)
  return experiment_config.load_config(None, [{"model": model, "train": train}])


def datasets():
  return (synthetic.synthetic_dataset(8, **DATA),
          synthetic.synthetic_dataset(8, repeat=False, seed=1, **DATA))


def scalar_tags(directory):
  tags = set()
  for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.add(value.tag)
  return tags


def test_run_directory_contract(tmp_path):
  model_dir = str(tmp_path / "run")
  summary = pretrain.run_pretraining(tiny_config(model_dir), *datasets())
  assert summary["final_step"] == 12 and summary["first_step"] == 0
  # Contract 6: params.yaml, ckpt-N by a CheckpointManager, train/ and validation/ logs.
  reloaded = experiment_config.load_config(os.path.join(model_dir, "params.yaml"))
  assert reloaded.train.train_steps == 12 and reloaded.model.hidden_size == 32
  assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-12")
  assert os.path.exists(os.path.join(model_dir, "ckpt-8.index"))
  train_tags = scalar_tags(os.path.join(model_dir, "train"))
  for tag in ("loss", "mlm_loss", "mpm_loss", "tia_loss", "weight_mlm", "weight_mpm",
              "weight_tia", "tia_accuracy", "mlm_accuracy", "learning_rate",
              "examples_per_second"):
    assert tag in train_tags, tag
  assert {"loss", "mlm_loss", "tia_accuracy"} <= scalar_tags(os.path.join(model_dir, "validation"))
  assert [entry["step"] for entry in summary["validation_history"]] == [6, 12]
  with open(os.path.join(model_dir, "train_summary.json")) as f:
    assert json.load(f)["final_step"] == 12
  # Evaluation restores the model alone (contract 6).
  from fashionbert_tf.modeling import model_builder  # pylint: disable=g-import-not-at-top
  model = model_builder.build_fashionbert(reloaded.model)
  tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(model_dir)).expect_partial()
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  word_embeddings = [name for name, shape in reader.get_variable_to_shape_map().items()
                     if name.startswith("model/") and shape == [40, 32]
                     and "OPTIMIZER_SLOT" not in name]
  assert len(word_embeddings) == 1, word_embeddings
  np.testing.assert_allclose(
      model.encoder.get_embedding_table().numpy(), reader.get_tensor(word_embeddings[0]))
  # Running again on a finished run does nothing more.
  again = pretrain.run_pretraining(tiny_config(model_dir), *datasets())
  assert again["first_step"] == 12 and again["final_step"] == 12


def test_early_stopping_on_validation_loss(tmp_path):
  # A learning rate of 0 never improves the validation loss: stop after `patience` validations
  # that did not improve on the first.
  config = tiny_config(str(tmp_path / "run"), learning_rate=0.0, train_steps=40,
                       validation_every_steps=2, early_stopping_patience=2,
                       checkpoint_every_steps=100)
  summary = pretrain.run_pretraining(config, *datasets())
  assert summary["stopped_early"]
  assert summary["final_step"] == 6
  assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-6")


def start_script(script, model_dir, stdout=subprocess.DEVNULL):
  """Runs `script` in a new Python process with argv [model_dir, this tests folder]."""
  return subprocess.Popen([sys.executable, "-c", script, model_dir, os.path.dirname(__file__)],
                          stdout=stdout, stderr=subprocess.PIPE, text=True)


def latest_step(model_dir):
  latest = tf.train.latest_checkpoint(model_dir)
  return int(latest.rsplit("-", 1)[1]) if latest else 0


def wait_for_checkpoint(process, model_dir, step, timeout=180, poll=0.05):
  """Waits until `model_dir` has a checkpoint of `step` or later; fails if `process` dies first."""
  deadline = time.time() + timeout
  while latest_step(model_dir) < step:
    assert process.poll() is None, process.stderr.read()[-3000:]
    assert time.time() < deadline, f"no checkpoint of step {step} within {timeout} s"
    time.sleep(poll)


def signal_after_checkpoint(process, model_dir, step, signal_number, timeout=180):
  """Sends `signal_number` to `process` once `model_dir` has a checkpoint of `step`, waits for it
  to exit, and returns (the step it stopped at, as its log says, the checkpoint path, stdout).

  Fails unless it exits with status 0 and logs `<SIGNAL>: stopped at step N with checkpoint P;`.
  """
  try:
    wait_for_checkpoint(process, model_dir, step, timeout=timeout)
    process.send_signal(signal_number)
    stdout, stderr = process.communicate(timeout=120)
  finally:
    if process.poll() is None:
      process.kill()
  name = signal.Signals(signal_number).name
  assert process.returncode == 0, stderr[-3000:]
  match = re.search(rf"{name}: stopped at step (\d+) with checkpoint (\S+);", stderr)
  assert match, stderr[-3000:]
  return int(match.group(1)), match.group(2), stdout
