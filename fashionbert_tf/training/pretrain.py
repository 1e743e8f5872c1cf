"""`run_pretraining(config)`: FashionBERT pre-training, resumable, with validation and early stopping.

Run directory (BRIEF contract 6), `<model_dir>` = `train.model_dir`:
  params.yaml          the full ExperimentConfig used;
  ckpt-N.{index,data}  `tf.train.CheckpointManager` checkpoints (N = the optimizer step) of
                       `tf.train.Checkpoint(model=FashionBertModel, optimizer=..., step=...,
                       early_stopping=...)`; restore the model alone with
                       `tf.train.Checkpoint(model=model).restore(path).expect_partial()`;
  train/, validation/  TensorBoard scalars (`callbacks.ScalarSummaries`);
  train_summary.json   what `run_pretraining` returns (steps, time, last logs).

Resuming: a run started on a `model_dir` that holds checkpoints restores the latest one (model,
optimizer slots and step, early-stopping state) and trains only the remaining steps, so it ends at
`train.train_steps` like an uninterrupted run. With `train.resume_input: skip` (the default) the
input continues where the checkpoint left it: the pipeline is deterministic (seeded shuffles, every
draw seeded by the chunk number), so a fresh one that skips the batches already consumed (step x
replicas fed per input pipeline) yields exactly the batches an unbroken run would have, negatives
and masks included. The skip re-reads those batches without training on them (logged with its
time); `restart` starts the input from its beginning instead.

Faults: SIGTERM / SIGINT save a checkpoint after the current step and stop (`StopRequest`); a
checkpoint that no longer reads is skipped for the one before (`restore_latest_readable`); a
non-finite loss or gradient never updates the weights (`train.on_nonfinite`); a shard that turns
out corrupt while training raises `RecordFileError` naming the file and record.

The loop is ours (it drives Keras' compiled `train_function` = `FashionBertPretrainer.train_step`
under the strategy, one step per call), because Keras' `fit` counts epochs from zero on every
call and cannot resume in the middle of one; `pretrainer.fit` still works for plain use.
"""

import json
import math
import os
import shutil
import signal
import sys
import threading
import time

from absl import logging
import tensorflow as tf
import tf_keras

from official.modeling.hyperparams import params_dict

from fashionbert_tf.modeling import model_builder
from fashionbert_tf.training import callbacks as callbacks_lib
from fashionbert_tf.training import optimizer as optimizer_lib
from fashionbert_tf.training import pretrainer as pretrainer_lib
from fashionbert_tf.training import strategies


def save_params(config, model_dir):
  """Writes `<model_dir>/params.yaml` (the full experiment config)."""
  tf.io.gfile.makedirs(model_dir)
  path = os.path.join(model_dir, "params.yaml")
  params_dict.save_params_dict_to_yaml(config, path)
  return path


def build_pipeline_dataset(config, split, input_context=None, skipped_records=None):
  """The data engineer's tf.data pipeline (`data.pipeline.build_pretraining_dataset`) for `split`.

  Global batches of `train.global_batch_size`; with an `input_context` (from
  `strategy.distribute_datasets_from_function`) this input pipeline's share of them. Batches carry
  `patch_features` when `model.use_precomputed_features`, else `image`.
  """
  from fashionbert_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  precomputed = config.model.use_precomputed_features
  return pipeline.build_pretraining_dataset(
      config.data, split, global_batch_size=config.train.global_batch_size,
      input_context=input_context, image_mode=not precomputed,
      feature_dim=config.model.feature_dim if precomputed else None,
      skipped_records=skipped_records)


def build_training_objects(config, strategy):
  """Model, optimizer and pretrainer, built and compiled in the strategy's scope."""
  with strategy.scope():
    model = model_builder.build_fashionbert(config.model)
    optimizer = strategies.maybe_wrap_for_loss_scaling(
        optimizer_lib.build_optimizer(config.train, model.new_layer_variables), config.train)
    pretrainer = pretrainer_lib.FashionBertPretrainer(model, config.train)
    pretrainer.compile(optimizer=optimizer, jit_compile=config.train.jit_compile)
    step = optimizer.iterations  # The global step: the schedule and the checkpoints use it.
  return model, optimizer, pretrainer, step


def set_patch_feature_statistics(config, model):
  """Gives a fresh model the training images' patch-feature statistics (`standardize` mode).

  They are read from the data folder, or computed there once when missing
  (`feature_statistics.ensure_statistics`); a resumed run restores them from its checkpoint.
  """
  normalization = model.patch_feature_normalization
  if normalization is None:
    return None
  from fashionbert_tf.modeling import feature_statistics  # pylint: disable=g-import-not-at-top
  statistics = feature_statistics.ensure_statistics(config)
  normalization.set_statistics(statistics)
  return statistics


def current_learning_rate(optimizer, step):
  """The learning rate the schedule gives at `step` (float)."""
  learning_rate = getattr(optimizer, "inner_optimizer", optimizer).learning_rate
  if isinstance(learning_rate, tf_keras.optimizers.schedules.LearningRateSchedule):
    learning_rate = learning_rate(step)
  return float(tf.convert_to_tensor(learning_rate))


class StopRequest:
  """SIGTERM / SIGINT during training, remembered and acted on after the current step.

  A context manager: it installs its handler for both signals (main thread only; elsewhere it
  does nothing) and puts the previous handlers back on exit. A second SIGINT while one is pending
  raises KeyboardInterrupt (the user insists).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_number = None
    self._previous = {}

  @property
  def signal_name(self):
    return None if self.signal_number is None else signal.Signals(self.signal_number).name

  def _handle(self, signal_number, frame):  # pylint: disable=unused-argument
    if self.signal_number == signal.SIGINT and signal_number == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_number = signal_number
    logging.warning("%s received: the run saves a checkpoint after the current step and stops",
                    self.signal_name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signal_number in self.SIGNALS:
        self._previous[signal_number] = signal.signal(signal_number, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signal_number, handler in self._previous.items():
      signal.signal(signal_number, handler)
    self._previous = {}


def restore_latest_readable(checkpoint, model_dir):
  """Restores the newest checkpoint of `model_dir` that reads; returns its path (None if none).

  A checkpoint only becomes the latest once written (the `checkpoint` state file is replaced
  atomically after the files), but a file can still be cut short or corrupted later (a full disk,
  a copy that died): such a checkpoint is skipped, with a warning naming it, for the one before.
  """
  state = tf.train.get_checkpoint_state(model_dir)
  paths = list(state.all_model_checkpoint_paths) if state else []
  if state and state.model_checkpoint_path and state.model_checkpoint_path not in paths:
    paths.append(state.model_checkpoint_path)
  unreadable = []
  for path in reversed(paths):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError) as error:
      message = getattr(error, "message", str(error)).strip().splitlines()[0]
      logging.warning("checkpoint %s cannot be restored (%s)", path, message)
      unreadable.append(os.path.basename(path))
      continue
    if unreadable:
      logging.warning("resuming from %s, the newest readable checkpoint (skipped: %s)", path,
                      ", ".join(unreadable))
    return path
  if unreadable:
    raise RuntimeError(f"no checkpoint in {model_dir} can be restored (tried "
                       f"{', '.join(unreadable)}); move them away to start afresh")
  return None


def exit_if_interrupted(summary, command):
  """For command-line tools: a run stopped by a signal exits with 128 + its number, one line."""
  if summary.get("interrupted_by"):
    name = summary["interrupted_by"]
    print(f"{command}: {name} at step {summary['final_step']}: checkpoint "
          f"{summary['checkpoint']} written; run the same command again to resume",
          file=sys.stderr)
    sys.exit(128 + int(getattr(signal, name)))


class NonFiniteLossError(RuntimeError):
  """A step's loss or gradient was NaN / Inf under `train.on_nonfinite: stop`."""


def _nonfinite_description(step_values):
  """'mlm_loss nan, gradient norm inf'-style text naming the non-finite values of one step."""
  names = [f"{task}_loss" for task in pretrainer_lib.TASKS] + ["gradient_norm"]
  values = {name: float(step_values[f"step_{name}"]) for name in names}
  bad = [f"{name.replace('_', ' ')} {value}" for name, value in values.items()
         if not math.isfinite(value)]
  return ", ".join(bad), values


def _on_nonfinite_step(step_values, step, on_nonfinite, latest_checkpoint, skipped_batches):
  """A step whose loss or gradient was NaN / Inf (its update was not applied): raises
  `NonFiniteLossError` for `stop`, else logs the skipped batch (`skip_batch`)."""
  description, values = _nonfinite_description(step_values)
  if on_nonfinite == "stop":
    raise NonFiniteLossError(
        f"non-finite values at step {step}: {description} (all values: {values}). The update "
        "was not applied and no checkpoint was written from this step; the latest checkpoint "
        f"is {latest_checkpoint or 'none'}. Look for bad records (NaN features, empty texts) or "
        "lower the learning rate; train.on_nonfinite=skip_batch skips such batches instead.")
  logging.warning("step %d: non-finite values (%s): batch skipped, no update applied (%d "
                  "skipped so far)", step, description, skipped_batches)


def _report_skipped_records(skipped_records, step):
  """Logs the records skipped since the last report (`data.skip_corrupt_records`); returns the
  total skipped so far (float, for the logs)."""
  new_skips = skipped_records.new_skips()
  totals = skipped_records.totals()
  if new_skips:
    logging.warning("step %d: unreadable records skipped (data.skip_corrupt_records) since the "
                    "last report: %s; so far: %s", step, new_skips, totals)
  return float(sum(totals.values()))


def _named_data_loss(config, train_dataset, error, step):
  """TensorFlow's DataLossError (no file name) -> `RecordFileError` naming the corrupt shard of
  the training pipeline, found by reading its files again; `error` itself when none is found."""
  if train_dataset is not None:
    return error
  from fashionbert_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data import records  # pylint: disable=g-import-not-at-top
  file_pattern = pipeline.split_file_pattern(config.data, "train",
                                             not config.model.use_precomputed_features)
  named = records.data_loss_error(file_pattern, error, where=f" at training step {step}")
  return named or error


def run_pretraining(config, train_dataset=None, validation_dataset=None, extra_callbacks=()):
  """Pre-trains (or resumes pre-training) FashionBERT as configured.

  Args:
    config: `ExperimentConfig` (sections data, model, train).
    train_dataset: optional `tf.data.Dataset` of global batches (batch contract), repeated, or a
      function of no arguments returning one (called after the strategy exists: a
      MultiWorkerMirroredStrategy must be created before any TensorFlow op runs); default: the
      data pipeline's "train" split.
    validation_dataset: optional dataset (or function returning one) for validation; default:
      the pipeline's "validation" split when `train.validation_steps` > 0.
    extra_callbacks: more Keras callbacks driven by the loop (see `callbacks.py`).

  Returns:
    dict: model_dir, first_step (0 or the restored step), final_step, stopped_early,
    elapsed_seconds, examples_per_second, train_logs (last), validation_logs (last),
    validation_history ([{"step", ...}]), checkpoint (latest path), skipped_batches (steps
    with a non-finite loss or gradient skipped under `train.on_nonfinite: skip_batch`),
    skipped_corrupt_records ({file: records skipped} under `data.skip_corrupt_records`),
    interrupted_by (None, or "SIGTERM" / "SIGINT": the signal that stopped the run after a step,
    with a checkpoint of that step written).

  Raises:
    NonFiniteLossError: a step's loss or gradient was NaN / Inf and `train.on_nonfinite` is
      "stop" (the weights in memory are those before that step; no checkpoint is written).
  """
  train_config = config.train
  train_config.validate()
  strategies.set_precision_policy(train_config)
  strategy = strategies.build_strategy(train_config)
  chief = strategies.is_chief(strategy)
  model_dir = train_config.model_dir
  write_dir = strategies.worker_dir(model_dir, strategy)
  tf.io.gfile.makedirs(write_dir)
  if chief:
    save_params(config, model_dir)
  tf_keras.utils.set_random_seed(train_config.seed)

  model, optimizer, pretrainer, step = build_training_objects(config, strategy)
  early_stopping = callbacks_lib.EarlyStopping(train_config.early_stopping_patience,
                                               train_config.early_stopping_min_delta)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step,
                                   early_stopping=early_stopping)
  manager = tf.train.CheckpointManager(checkpoint, write_dir,
                                       max_to_keep=train_config.max_checkpoints_to_keep,
                                       checkpoint_name="ckpt")
  latest = restore_latest_readable(checkpoint, model_dir)
  if latest:
    logging.info("resumed from %s at step %d", latest, int(step.numpy()))
  else:
    set_patch_feature_statistics(config, model)
  first_step = int(step.numpy())
  total_steps = train_config.train_steps

  summary = dict(model_dir=model_dir, first_step=first_step, final_step=first_step,
                 stopped_early=False, elapsed_seconds=0.0, examples_per_second=0.0,
                 train_logs={}, validation_logs={}, validation_history=[], checkpoint=latest,
                 skipped_batches=0, skipped_corrupt_records={}, interrupted_by=None)
  patience = train_config.early_stopping_patience
  if patience > 0 and int(early_stopping.bad_validations.numpy()) >= patience:
    logging.info("the run in %s already stopped early at step %d", model_dir, first_step)
    summary["stopped_early"] = True
    return summary
  if first_step >= total_steps:
    logging.info("the run in %s is complete (step %d of %d)", model_dir, first_step, total_steps)
    return summary

  if callable(train_dataset):
    train_dataset = train_dataset()
  if callable(validation_dataset):
    validation_dataset = validation_dataset()
  skip_consumed = train_config.resume_input == "skip" and first_step > 0
  skipped_records = None
  if train_dataset is None:
    if config.data.skip_corrupt_records:
      from fashionbert_tf.data import pipeline  # pylint: disable=g-import-not-at-top
      skipped_records = pipeline.skipped_record_counter(pipeline.split_file_pattern(
          config.data, "train", not config.model.use_precomputed_features))

    def dataset_fn(input_context):
      dataset = build_pipeline_dataset(config, "train", input_context, skipped_records)
      if skip_consumed:
        # Each replica this pipeline feeds took one of its batches per step.
        replicas_per_pipeline = (input_context.num_replicas_in_sync //
                                 input_context.num_input_pipelines)
        dataset = dataset.skip(first_step * replicas_per_pipeline)
      return dataset
    distributed_train = strategy.distribute_datasets_from_function(dataset_fn)
  else:
    if skip_consumed:
      train_dataset = train_dataset.skip(first_step)  # global batches, one per step
    distributed_train = strategy.experimental_distribute_dataset(train_dataset)
  if skip_consumed:
    logging.info("resuming the input at step %d: the first step skips the %d batches already "
                 "consumed (train.resume_input=skip)", first_step, first_step)
  validate = train_config.validation_steps > 0
  if validate and validation_dataset is None:
    validation_dataset = build_pipeline_dataset(config, "validation")
  iterator = iter(distributed_train)
  train_function = pretrainer.make_train_function()

  callback_list = callbacks_lib.StepCallbacks(
      [callbacks_lib.ScalarSummaries(model_dir, train_config.log_every_steps, enabled=chief),
       callbacks_lib.ProgressLogger(total_steps, train_config.log_every_steps, first_step)]
      + list(extra_callbacks), pretrainer)
  callback_list.on_train_begin()
  start = window_start = time.time()
  window_steps = 0
  current = first_step
  stopped_early = False
  skipped_batches = 0
  stop_request = StopRequest()
  with stop_request:
    while current < total_steps:
      try:
        logs = train_function(iterator)
      except tf.errors.DataLossError as error:
        raise _named_data_loss(config, train_dataset, error, current + 1) from None
      if skip_consumed and current == first_step:
        logging.info("first step after the resume (skip included): %.1f s", time.time() - start)
      current += 1
      window_steps += 1
      last = current == total_steps
      # This step's own values (not averaged): the weights were updated only if it was finite.
      step_values = {name: logs.pop(name) for name in list(logs) if name.startswith("step_")}
      if not float(step_values["step_finite"]):
        skipped_batches += 1
        _on_nonfinite_step(step_values, current, train_config.on_nonfinite,
                           manager.latest_checkpoint, skipped_batches)
      if current % train_config.log_every_steps == 0 or last:
        logs = {name: float(value) for name, value in logs.items()}
        logs["skipped_batches"] = float(skipped_batches)
        if skipped_records is not None:
          logs["skipped_corrupt_records"] = _report_skipped_records(skipped_records, current)
        logs["learning_rate"] = current_learning_rate(optimizer, current)
        logs["examples_per_second"] = (window_steps * train_config.global_batch_size /
                                       max(time.time() - window_start, 1e-9))
        callback_list.on_train_batch_end(current, logs)
        summary["train_logs"] = logs
        pretrainer.reset_metrics()
        window_steps, window_start = 0, time.time()
      if validate and not stop_request.signal_number and (
          current % train_config.validation_every_steps == 0 or last):
        validation_logs = pretrainer.evaluate(validation_dataset,
                                              steps=train_config.validation_steps, verbose=0,
                                              return_dict=True)
        validation_logs = {name: float(value) for name, value in validation_logs.items()}
        pretrainer.reset_metrics()
        callback_list.on_epoch_end(current, {f"val_{k}": v for k, v in validation_logs.items()})
        summary["validation_logs"] = validation_logs
        summary["validation_history"].append(dict(step=current, **validation_logs))
        stopped_early = early_stopping.update(validation_logs["loss"])
        if stopped_early:
          logging.info("early stopping at step %d: validation loss did not improve for %d "
                       "validations (best %.4f)", current, patience,
                       float(early_stopping.best_loss.numpy()))
        window_start = time.time()
      if (current % train_config.checkpoint_every_steps == 0 or last or stopped_early or
          stop_request.signal_number):
        summary["checkpoint"] = manager.save(checkpoint_number=current)
        window_start = time.time()
      if stop_request.signal_number:
        summary["interrupted_by"] = stop_request.signal_name
        logging.warning("%s: stopped at step %d with checkpoint %s; run the same command again to "
                        "resume from there", stop_request.signal_name, current,
                        summary["checkpoint"])
        break
      if stopped_early:
        break
  callback_list.on_train_end()

  elapsed = time.time() - start
  summary.update(final_step=int(step.numpy()), stopped_early=stopped_early,
                 skipped_batches=skipped_batches,
                 skipped_corrupt_records=skipped_records.totals() if skipped_records else {},
                 elapsed_seconds=elapsed,
                 examples_per_second=(current - first_step) * train_config.global_batch_size /
                 max(elapsed, 1e-9))
  if chief:
    with tf.io.gfile.GFile(os.path.join(model_dir, "train_summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  elif write_dir != model_dir:
    shutil.rmtree(write_dir, ignore_errors=True)
  logging.info("pre-training done: step %d, %.1f s, %.1f examples/s", summary["final_step"],
               elapsed, summary["examples_per_second"])
  return summary
