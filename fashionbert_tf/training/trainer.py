"""`Trainer`: the one training loop, and the `Task` a job (pre-training, fine-tuning) plugs in.

Model Garden's split (official/core/base_task.py, base_trainer.py): the task owns *what* is trained
(its model and optimizer, its input, one step, its validation metrics, its own summary fields), the
trainer *how* a run goes, the same for every task:

Run folder `<model_dir>` (`task.model_dir`):
  params.yaml          the experiment config (`task.write_params`), written by the chief;
  ckpt-N.{index,data}  `tf.train.CheckpointManager` checkpoints (N = the optimizer step) of
                       `tf.train.Checkpoint(model=task.model, optimizer=..., step=...)`, plus
                       `early_stopping=` for tasks that stop early; restore the model alone with
                       `tf.train.Checkpoint(model=model).restore(path).expect_partial()`;
  train/, validation/  TensorBoard scalars (`callbacks.ScalarSummaries`);
  <task.summary_file>  the summary dict `Trainer.run` returns.

Resuming: a run started on a folder that holds checkpoints restores the newest one that reads
(`resume.restore_latest_readable`: model, optimizer slots and step, early-stopping state) and trains
only the remaining steps, so it ends at `train.train_steps` like an uninterrupted run; the task's
input skips the batches the restored steps consumed. A fresh run with `train.init_checkpoint`
starts its model from that checkpoint, everything else afresh (`warm_start`).

Faults: SIGTERM / SIGINT save a checkpoint after the current step and stop (`preemption`); a step
whose loss or gradient is NaN / Inf applies no update (the task's step uses
`nonfinite.apply_gradients_if_finite`) and `train.on_nonfinite` says whether the run stops or skips
the batch (`nonfinite.on_nonfinite_step`).

Cadence (`train.*`): every `log_every_steps` steps (and the last) the train logs go to TensorBoard
and an absl line: the task's means since the last log, `skipped_batches`, `learning_rate`,
`examples_per_second`; every `validation_every_steps` steps (and the last) the task validates (not
when a signal is pending), which may stop the run early (tasks with `uses_early_stopping`:
`train.early_stopping_patience` validations without improvement); every `checkpoint_every_steps`
steps, the last, an early stop and a signal save a checkpoint.

The loop is ours, not Keras' `fit`, because `fit` counts epochs from zero on every call and cannot
resume in the middle of one.
"""

import json
import os
import shutil
import time

from absl import logging
import tensorflow as tf
import tf_keras

from official.modeling.hyperparams import params_dict

from fashionbert_tf.training import callbacks as callbacks_lib
from fashionbert_tf.training import nonfinite
from fashionbert_tf.training import preemption
from fashionbert_tf.training import resume
from fashionbert_tf.training import strategies
from fashionbert_tf.training import warm_start


def save_params(config, model_dir):
  """Writes `<model_dir>/params.yaml` (the full experiment config); returns its path."""
  tf.io.gfile.makedirs(model_dir)
  path = os.path.join(model_dir, "params.yaml")
  params_dict.save_params_dict_to_yaml(config, path)
  return path


def current_learning_rate(optimizer, step):
  """The learning rate the schedule gives at `step` (float)."""
  learning_rate = getattr(optimizer, "inner_optimizer", optimizer).learning_rate
  if isinstance(learning_rate, tf_keras.optimizers.schedules.LearningRateSchedule):
    learning_rate = learning_rate(step)
  return float(tf.convert_to_tensor(learning_rate))


class Task:
  """One training job, as the `Trainer` drives it. Subclasses fill in the methods below.

  The trainer calls, in this order: `write_params` (chief only), `build`, `initialize`,
  `summary_fields`, then, when steps remain, `prepare_training` and per step `train_step`,
  `train_logs` at log steps and `validate` at validation steps (when `has_validation`).

  Class attributes:
    name: what runs, in log lines ("pre-training").
    summary_file: the summary JSON's name in the run folder.
    step_value_names: the values `train_step` returns besides `step_finite` (as `step_<name>`),
      named in this order when a step is not finite.
    uses_early_stopping: stop on validation-loss patience (`train.early_stopping_*`).
    validates_at_start: a fresh run validates once at step 0, before training.

  Attributes set by the task:
    config: the experiment config (`config.train`: the `TrainConfig` the trainer reads).
    model_dir: the run folder.
    model, optimizer: after `build`; checkpointed as `model` and `optimizer`, and
      `optimizer.iterations` is the global step.
    skipped_records: a `records.SkippedRecordCounter` of the training input (its skips are
      reported in the train logs), or None.
  """

  name = "training"
  summary_file = "train_summary.json"
  step_value_names = ("loss", "gradient_norm")
  uses_early_stopping = False
  validates_at_start = False

  def __init__(self, config, model_dir):
    self.config = config
    self.model_dir = model_dir
    self.model = None
    self.optimizer = None
    self.skipped_records = None

  @property
  def callback_model(self):
    """The Keras model the callbacks are given (`Callback.set_model`)."""
    return self.model

  @property
  def has_validation(self):
    """Whether `validate` can run (after `prepare_training`)."""
    return False

  def write_params(self, model_dir):
    """Writes the run's params.yaml into `model_dir`."""
    save_params(self.config, model_dir)

  def build(self, strategy):
    """Builds `model` and `optimizer` (in `strategy.scope()`)."""
    raise NotImplementedError

  def initialize(self, restored_from):
    """After the restore: `restored_from` is the checkpoint the model's weights came from (the
    run's own, or a warm start's `train.init_checkpoint`), or None for a fresh run (then
    initialize the weights that do not start random)."""

  def summary_fields(self):
    """The task's own fields of the summary (dict); asked at the start and at the end."""
    return {}

  def prepare_training(self, strategy, first_step):
    """Builds the input (skipping what steps 1..`first_step` consumed) and the step."""
    raise NotImplementedError

  def train_step(self, step):
    """Runs step number `step` (1-based) on the next batch; returns this step's own values:
    `step_finite` (1. or 0.: the update was applied) and `step_<name>` per `step_value_names`."""
    raise NotImplementedError

  def train_logs(self):
    """The train metrics since the last call (float dict, means over the applied steps); resets
    them."""
    raise NotImplementedError

  def validate(self, step):
    """The validation metrics at `step` (float dict with a `loss`)."""
    raise NotImplementedError


class Trainer:
  """Runs a `Task` to `train.train_steps`: resumable, preemptible (module docstring)."""

  def __init__(self, task, extra_callbacks=()):
    """Args:
      task: the `Task`.
      extra_callbacks: more Keras callbacks, driven with the global step (see `callbacks.py`).
    """
    self.task = task
    self.extra_callbacks = list(extra_callbacks)
    self.train_config = task.config.train
    # The run's state, set by `run`.
    self.chief = True                 # this worker writes params, summaries and the summary file
    self.write_dir = None             # where this worker saves checkpoints
    self.step = None                  # the global step variable (`task.optimizer.iterations`)
    self.manager = None               # the CheckpointManager
    self.early_stopping = None        # callbacks.EarlyStopping, for tasks that stop early
    self.callbacks = None             # callbacks.StepCallbacks
    self.summary = None               # what `run` returns

  def run(self):
    """Trains (or resumes) the task; writes and returns the summary.

    Returns:
      dict: model_dir, first_step (0 or the restored step), final_step, stopped_early (tasks with
      early stopping), elapsed_seconds, examples_per_second, train_logs (last), validation_logs
      (last), validation_history ([{"step", ...}]), checkpoint (latest path), init_checkpoint
      (the checkpoint a warm start took the model from, else None), skipped_batches (non-finite
      steps skipped under `train.on_nonfinite: skip_batch`), the task's `summary_fields`,
      interrupted_by (None, or "SIGTERM" / "SIGINT": the signal that stopped the
      run after a step, with a checkpoint of that step written).

    Raises:
      nonfinite.NonFiniteLossError: a step's loss or gradient was NaN / Inf and
        `train.on_nonfinite` is "stop" (the weights in memory are those before that step; no
        checkpoint is written from it).
    """
    task, train_config = self.task, self.train_config
    train_config.validate()
    strategies.set_precision_policy(train_config)
    strategy = strategies.build_strategy(train_config)
    self.chief = strategies.is_chief(strategy)
    model_dir = task.model_dir
    self.write_dir = strategies.worker_dir(model_dir, strategy)
    tf.io.gfile.makedirs(self.write_dir)
    if self.chief:
      task.write_params(model_dir)
    tf_keras.utils.set_random_seed(train_config.seed)

    task.build(strategy)
    self.step = task.optimizer.iterations
    objects = dict(model=task.model, optimizer=task.optimizer, step=self.step)
    if task.uses_early_stopping:
      self.early_stopping = callbacks_lib.EarlyStopping(train_config.early_stopping_patience,
                                                        train_config.early_stopping_min_delta)
      objects["early_stopping"] = self.early_stopping
    checkpoint = tf.train.Checkpoint(**objects)
    self.manager = tf.train.CheckpointManager(checkpoint, self.write_dir,
                                              max_to_keep=train_config.max_checkpoints_to_keep,
                                              checkpoint_name="ckpt")
    latest = resume.restore_latest_readable(checkpoint, model_dir)
    if latest:
      logging.info("resumed from %s at step %d", latest, int(self.step.numpy()))
    init_checkpoint = None
    if train_config.init_checkpoint and latest:
      logging.info("train.init_checkpoint=%s not used: the run resumes from its own %s",
                   train_config.init_checkpoint, latest)
    elif train_config.init_checkpoint:
      init_checkpoint = warm_start.restore_model_weights(task.model, train_config.init_checkpoint)
    task.initialize(latest or init_checkpoint)

    first_step = int(self.step.numpy())
    summary = dict(model_dir=model_dir, first_step=first_step, final_step=first_step)
    if self.early_stopping is not None:
      summary["stopped_early"] = False
    summary.update(elapsed_seconds=0.0, examples_per_second=0.0, train_logs={},
                   validation_logs={}, validation_history=[], checkpoint=latest,
                   init_checkpoint=init_checkpoint, skipped_batches=0,
                   **task.summary_fields(), interrupted_by=None)
    patience = train_config.early_stopping_patience
    if (self.early_stopping is not None and patience > 0 and
        int(self.early_stopping.bad_validations.numpy()) >= patience):
      logging.info("the run in %s already stopped early at step %d", model_dir, first_step)
      summary["stopped_early"] = True
      return summary
    if first_step >= train_config.train_steps:
      logging.info("the run in %s is complete (step %d of %d)", model_dir, first_step,
                   train_config.train_steps)
      return summary

    task.prepare_training(strategy, first_step)
    self.summary = summary
    start, final_step = self._train(first_step)
    self._finish(start, first_step, final_step)
    return summary

  def _train(self, first_step):
    """Steps from `first_step` to `train.train_steps`, or until an early stop or a signal;
    returns (the time training started, the last step run)."""
    task, train_config, summary = self.task, self.train_config, self.summary
    total_steps = train_config.train_steps
    self.callbacks = callbacks_lib.StepCallbacks(
        [callbacks_lib.ScalarSummaries(task.model_dir, train_config.log_every_steps,
                                       enabled=self.chief),
         callbacks_lib.ProgressLogger(total_steps, train_config.log_every_steps, first_step,
                                      label=task.name)]
        + self.extra_callbacks, task.callback_model)
    self.callbacks.on_train_begin()
    validate = task.has_validation
    if validate and task.validates_at_start and first_step == 0:
      self._validate(0)
    start = window_start = time.time()
    window_steps = 0
    current = first_step
    stopped_early = False
    skipped_batches = 0
    stop_request = preemption.StopRequest()
    with stop_request:
      while current < total_steps:
        step_values = task.train_step(current + 1)
        current += 1
        window_steps += 1
        last = current == total_steps
        if not float(step_values["step_finite"]):
          skipped_batches += 1
          nonfinite.on_nonfinite_step(step_values, task.step_value_names, current,
                                      train_config.on_nonfinite, self.manager.latest_checkpoint,
                                      skipped_batches)
        if current % train_config.log_every_steps == 0 or last:
          logs = task.train_logs()
          logs["skipped_batches"] = float(skipped_batches)
          if task.skipped_records is not None:
            logs["skipped_corrupt_records"] = _report_skipped_records(task.skipped_records,
                                                                      current)
          logs["learning_rate"] = current_learning_rate(task.optimizer, current)
          logs["examples_per_second"] = (window_steps * train_config.global_batch_size /
                                         max(time.time() - window_start, 1e-9))
          self.callbacks.on_train_batch_end(current, logs)
          summary["train_logs"] = logs
          window_steps, window_start = 0, time.time()
        if validate and not stop_request.signal_number and (
            current % train_config.validation_every_steps == 0 or last):
          stopped_early = self._validate(current)
          window_start = time.time()
        if (current % train_config.checkpoint_every_steps == 0 or last or stopped_early or
            stop_request.signal_number):
          summary["checkpoint"] = self.manager.save(checkpoint_number=current)
          window_start = time.time()
        if stop_request.signal_number:
          summary["interrupted_by"] = stop_request.signal_name
          logging.warning("%s: stopped at step %d with checkpoint %s; run the same command again "
                          "to resume from there", stop_request.signal_name, current,
                          summary["checkpoint"])
          break
        if stopped_early:
          break
    self.callbacks.on_train_end()
    summary["skipped_batches"] = skipped_batches
    if self.early_stopping is not None:
      summary["stopped_early"] = stopped_early
    return start, current

  def _validate(self, step):
    """Validates at `step`: TensorBoard, the summary, early stopping; True to stop early."""
    logs = self.task.validate(step)
    self.callbacks.on_epoch_end(step, {f"val_{name}": value for name, value in logs.items()})
    self.summary["validation_logs"] = logs
    self.summary["validation_history"].append(dict(step=step, **logs))
    if self.early_stopping is None or not self.early_stopping.update(logs["loss"]):
      return False
    logging.info("early stopping at step %d: validation loss did not improve for %d "
                 "validations (best %.4f)", step, self.train_config.early_stopping_patience,
                 float(self.early_stopping.best_loss.numpy()))
    return True

  def _finish(self, start, first_step, final_step):
    """Completes the summary, writes it (chief) and logs the run's totals."""
    summary, task = self.summary, self.task
    elapsed = time.time() - start
    summary.update(final_step=int(self.step.numpy()), **task.summary_fields(),
                   elapsed_seconds=elapsed,
                   examples_per_second=(final_step - first_step) *
                   self.train_config.global_batch_size / max(elapsed, 1e-9))
    if self.chief:
      with tf.io.gfile.GFile(os.path.join(task.model_dir, task.summary_file), "w") as handle:
        json.dump(summary, handle, indent=2)
    elif self.write_dir != task.model_dir:
      shutil.rmtree(self.write_dir, ignore_errors=True)
    logging.info("%s done: step %d, %.1f s, %.1f examples/s", task.name, summary["final_step"],
                 elapsed, summary["examples_per_second"])


def _report_skipped_records(skipped_records, step):
  """Logs the records skipped since the last report (`data.skip_corrupt_records`); returns the
  total skipped so far (float, for the logs)."""
  new_skips = skipped_records.new_skips()
  totals = skipped_records.totals()
  if new_skips:
    logging.warning("step %d: unreadable records skipped (data.skip_corrupt_records) since the "
                    "last report: %s; so far: %s", step, new_skips, totals)
  return float(sum(totals.values()))
