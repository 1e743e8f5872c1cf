"""Reporting and early stopping for the training loop (`trainer.Trainer`).

The loop calls Keras callback hooks itself (`on_train_begin`, `on_train_batch_end(step, logs)`
after every step, `on_epoch_end(step, logs)` after every validation with `val_`-prefixed logs,
`on_train_end`), with `step` the global optimizer step (it survives a resume, unlike Keras'
per-`fit` batch counter). The train logs carry every metric of the pretrainer (losses, weights
w_i, accuracies) plus `learning_rate` and `examples_per_second`.

  * `ScalarSummaries`: TensorBoard scalars, `<model_dir>/train` and `<model_dir>/validation`
    (contract 6): every loss, every weight w_i (paper Figure 4), TIA / MLM accuracy, learning rate,
    examples/s.
  * `ProgressLogger`: absl log lines with step counts, rates and ETA.
  * `EarlyStopping`: validation-loss patience; its state is a `tf.Module` saved in the checkpoint,
    so a resumed run continues the same count.
"""

import math
import os
import time

from absl import logging
import tensorflow as tf
import tf_keras


class ScalarSummaries(tf_keras.callbacks.Callback):
  """Writes train scalars every `every_steps` steps and every validation's scalars.

  Train scalars are the mean over the steps since the last write (the loop resets the metrics after
  each write). Only the chief writes (`enabled=False` elsewhere).
  """

  def __init__(self, model_dir, every_steps, enabled=True):
    super().__init__()
    self.every_steps = every_steps
    self.enabled = enabled
    self._train_writer = self._validation_writer = None
    if enabled:
      self._train_writer = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
      self._validation_writer = tf.summary.create_file_writer(os.path.join(model_dir, "validation"))

  def on_train_batch_end(self, batch, logs=None):
    if self.enabled and logs and batch % self.every_steps == 0:
      self._write(self._train_writer, batch, logs)

  def on_epoch_end(self, epoch, logs=None):
    if not self.enabled or not logs:
      return
    validation = {k[len("val_"):]: v for k, v in logs.items() if k.startswith("val_")}
    self._write(self._validation_writer, epoch, validation)

  def on_train_end(self, logs=None):
    for writer in (self._train_writer, self._validation_writer):
      if writer is not None:
        writer.flush()

  @staticmethod
  def _write(writer, step, logs):
    with writer.as_default(step=int(step)):
      for name, value in logs.items():
        tf.summary.scalar(name, float(value))
    writer.flush()


class ProgressLogger(tf_keras.callbacks.Callback):
  """absl progress lines: `step 120/400 (30%) | 14.1 examples/s | loss ... | eta 3m10s`.

  The first line names what runs: `<label> from step <first_step> to <total_steps>` (label e.g.
  "pre-training", "search fine-tuning").
  """

  def __init__(self, total_steps, every_steps, first_step=0, label="pre-training"):
    super().__init__()
    self.total_steps = total_steps
    self.every_steps = every_steps
    self.first_step = first_step
    self.label = label
    self._start = None

  def on_train_begin(self, logs=None):
    self._start = time.time()
    logging.info("%s from step %d to %d", self.label, self.first_step, self.total_steps)

  def on_train_batch_end(self, batch, logs=None):
    if batch % self.every_steps and batch != self.total_steps:
      return
    logs = logs or {}
    elapsed = time.time() - self._start
    done = batch - self.first_step
    eta = elapsed / done * (self.total_steps - batch) if done > 0 else float("nan")
    shown = " ".join(f"{name} {float(value):.4g}" for name, value in logs.items()
                     if name not in ("examples_per_second", "learning_rate"))
    logging.info("step %d/%d (%.0f%%) | %.1f examples/s | lr %.3g | %s | eta %s", batch,
                 self.total_steps, 100.0 * batch / self.total_steps,
                 float(logs.get("examples_per_second", float("nan"))),
                 float(logs.get("learning_rate", float("nan"))), shown, format_seconds(eta))

  def on_epoch_end(self, epoch, logs=None):
    shown = " ".join(f"{name} {float(value):.4g}" for name, value in (logs or {}).items())
    logging.info("validation at step %d | %s", epoch, shown)


class EarlyStopping(tf.Module):
  """Stops after `patience` validations whose loss did not improve by more than `min_delta`.

  Paper 3.1: "trained ... with early stopping to avoid overfitting". The best loss and the count
  of bad validations are variables, saved with the checkpoint (`checkpoint.early_stopping`).
  """

  def __init__(self, patience, min_delta=0.0):
    super().__init__(name="early_stopping")
    self.patience = patience
    self.min_delta = min_delta
    self.best_loss = tf.Variable(math.inf, dtype=tf.float32, trainable=False, name="best_loss")
    self.bad_validations = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_validations")

  def update(self, validation_loss):
    """Records one validation; True when training should stop."""
    validation_loss = float(validation_loss)
    if validation_loss < float(self.best_loss.numpy()) - self.min_delta:
      self.best_loss.assign(validation_loss)
      self.bad_validations.assign(0)
    else:
      self.bad_validations.assign_add(1)
    return self.patience > 0 and int(self.bad_validations.numpy()) >= self.patience


class StepCallbacks:
  """Calls Keras callbacks' hooks with the global step (no per-batch timing hooks needed)."""

  def __init__(self, callbacks, model):
    self.callbacks = list(callbacks)
    for callback in self.callbacks:
      callback.set_model(model)

  def on_train_begin(self, logs=None):
    for callback in self.callbacks:
      callback.on_train_begin(logs)

  def on_train_batch_end(self, step, logs):
    for callback in self.callbacks:
      callback.on_train_batch_end(step, logs)

  def on_epoch_end(self, step, logs):
    for callback in self.callbacks:
      callback.on_epoch_end(step, logs)

  def on_train_end(self, logs=None):
    for callback in self.callbacks:
      callback.on_train_end(logs)


def format_seconds(seconds):
  if not math.isfinite(seconds):
    return "?"
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
