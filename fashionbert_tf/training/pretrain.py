"""`run_pretraining(config)`: FashionBERT pre-training (paper 2.2), a task on `trainer.Trainer`.

The trainer owns the run (folder, checkpoints and resume, SIGTERM / SIGINT, the non-finite policy,
logging / validation / checkpoint cadence, TensorBoard, train_summary.json; see trainer.py). This
task brings what is pre-training's own:
  * the model, optimizer and `FashionBertPretrainer` (whose compiled `train_step` is Algorithm 1),
    built under the strategy; a fresh run's patch-feature statistics;
  * the input: the data pipeline's "train" split (or a dataset passed in), distributed by the
    strategy; a resumed run's input continues where the checkpoint left it (`train.resume_input`:
    "skip", the default, re-reads and drops the batches already consumed, step x replicas fed per
    input pipeline, so the deterministic pipeline yields exactly the batches an unbroken run would
    have, negatives and masks included; "restart" starts from the beginning);
  * a shard that turns out corrupt while training raises `RecordFileError` naming the file and
    record; `data.skip_corrupt_records` counts skipped records instead (in the train logs);
  * validation: the pretrainer's losses and accuracies on `train.validation_steps` batches of the
    "validation" split; early stopping on its `loss` (paper 3.1).
The train logs carry every metric of the pretrainer (losses, weights w_i, accuracies).
"""

import os
import time

from absl import logging
import tensorflow as tf

from fashionbert_tf.configs import data as data_config_lib
from fashionbert_tf.data import pipeline
from fashionbert_tf.data import records
from fashionbert_tf.modeling import feature_statistics
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.training import mlm_head
from fashionbert_tf.training import optimizer as optimizer_lib
from fashionbert_tf.training import pretrainer as pretrainer_lib
from fashionbert_tf.training import strategies
from fashionbert_tf.training import trainer as trainer_lib


def build_pipeline_dataset(config, split, input_context=None, skipped_records=None):
  """The tf.data pipeline (`data.pipeline.build_pretraining_dataset`) for `split`.

  Global batches of `train.global_batch_size`; with an `input_context` (from
  `strategy.distribute_datasets_from_function`) this input pipeline's share of them. Batches carry
  `patch_features` when `model.use_precomputed_features`, else `image`.
  """
  precomputed = config.model.use_precomputed_features
  data_config = config.data
  if split != "train":     # validation pairs as evaluation draws them (no look-alikes)
    data_config = config.data.replace(negative_sampling=data_config_lib.held_out_negative_sampling(
        config.data.negative_sampling))
  return pipeline.build_pretraining_dataset(
      data_config, split, global_batch_size=config.train.global_batch_size,
      input_context=input_context, image_mode=not precomputed,
      feature_dim=config.model.feature_dim if precomputed else None,
      skipped_records=skipped_records)


def build_training_objects(config, strategy):
  """Model, optimizer and pretrainer, built and compiled in the strategy's scope.

  A warm start (`train.init_checkpoint`) builds the model without reading the BERT weights: the
  checkpoint sets every variable.
  """
  with strategy.scope():
    model = model_builder.build_fashionbert(
        config.model, load_pretrained_weights=not config.train.init_checkpoint)
    optimizer = strategies.maybe_wrap_for_loss_scaling(
        optimizer_lib.build_optimizer(config.train, model.new_layer_variables), config.train)
    pretrainer = pretrainer_lib.FashionBertPretrainer(model, config.train)
    pretrainer.compile(optimizer=optimizer, jit_compile=config.train.jit_compile)
    step = optimizer.iterations  # The global step: the schedule and the checkpoints use it.
  return model, optimizer, pretrainer, step


def with_mlm_head(config):
  """`config` whose encoder checkpoint carries an MLM head when `model.mlm_head_training_steps`
  asks for one (trained once in `<train.model_dir>/encoder_with_mlm_head`, training/mlm_head.py).

  Under `multi_worker` the head must exist already (every worker would train its own): a
  one-device run of `fashionbert pretrain` with `train.train_steps=1` trains and writes it.
  """
  if config.model.mlm_head_training_steps <= 0 or config.train.init_checkpoint:
    return config    # a warm start's head comes from its checkpoint
  if config.train.strategy == "multi_worker" and not os.path.exists(
      os.path.join(mlm_head.mlm_head_dir(config), mlm_head.LOG_FILE)):
    raise ValueError(
        f"model.mlm_head_training_steps > 0 under multi_worker: train the MLM head first "
        f"({mlm_head.mlm_head_dir(config)} is missing) with a one-device run "
        "(--params_override train.strategy=one_device,train.train_steps=1)")
  return config.replace(model={"encoder_checkpoint": mlm_head.ensure_mlm_head(config)})


def set_patch_feature_statistics(config, model):
  """Gives a fresh model the training images' patch-feature statistics (`standardize` mode).

  They are read from the data folder, or computed there once when missing
  (`feature_statistics.ensure_statistics`); a resumed run restores them from its checkpoint.
  """
  normalization = model.patch_feature_normalization
  if normalization is None:
    return None
  statistics = feature_statistics.ensure_statistics(config)
  normalization.set_statistics(statistics)
  return statistics


def _named_data_loss(config, dataset_given, error, step):
  """TensorFlow's DataLossError (no file name) -> `RecordFileError` naming the corrupt shard of
  the training pipeline, found by reading its files again; `error` itself when none is found."""
  if dataset_given:
    return error
  file_pattern = pipeline.split_file_pattern(config.data, "train",
                                             not config.model.use_precomputed_features)
  named = records.data_loss_error(file_pattern, error, where=f" at training step {step}")
  return named or error


class PretrainingTask(trainer_lib.Task):
  """Pre-training as a `trainer.Task` (module docstring)."""

  name = "pre-training"
  summary_file = "train_summary.json"
  step_value_names = tuple(f"{task}_loss" for task in pretrainer_lib.TASKS) + ("gradient_norm",)
  uses_early_stopping = True

  def __init__(self, config, train_dataset=None, validation_dataset=None):
    super().__init__(config, config.train.model_dir)
    self._train_dataset = train_dataset
    self._validation_dataset = validation_dataset
    self.pretrainer = None
    # Set by prepare_training: the distributed input, the compiled step, the step to time (the
    # first after a resume that skips input), and the last step's metrics (Keras Means).
    self._reads_pipeline = True
    self._iterator = None
    self._train_function = None
    self._timed_step = None
    self._logs = {}

  @property
  def callback_model(self):
    return self.pretrainer

  @property
  def has_validation(self):
    return self.config.train.validation_steps > 0

  def build(self, strategy):
    self.model, self.optimizer, self.pretrainer, _ = build_training_objects(
        with_mlm_head(self.config), strategy)

  def initialize(self, restored_from):
    if not restored_from:
      set_patch_feature_statistics(self.config, self.model)

  def summary_fields(self):
    return dict(skipped_corrupt_records=(self.skipped_records.totals()
                                         if self.skipped_records else {}))

  def prepare_training(self, strategy, first_step):
    config = self.config
    train_dataset, validation_dataset = self._train_dataset, self._validation_dataset
    # Functions are called only now that the strategy exists (a MultiWorkerMirroredStrategy must
    # be created before any TensorFlow op runs).
    if callable(train_dataset):
      train_dataset = train_dataset()
    if callable(validation_dataset):
      validation_dataset = validation_dataset()
    skip_consumed = config.train.resume_input == "skip" and first_step > 0
    if train_dataset is None:
      if config.data.skip_corrupt_records:
        self.skipped_records = pipeline.skipped_record_counter(pipeline.split_file_pattern(
            config.data, "train", not config.model.use_precomputed_features))

      def dataset_fn(input_context):
        dataset = build_pipeline_dataset(config, "train", input_context, self.skipped_records)
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
    if self.has_validation and validation_dataset is None:
      validation_dataset = build_pipeline_dataset(config, "validation")
    self._reads_pipeline = train_dataset is None
    self._validation_dataset = validation_dataset
    self._iterator = iter(distributed_train)
    self._train_function = self.pretrainer.make_train_function()
    self._timed_step = first_step + 1 if skip_consumed else None

  def train_step(self, step):
    start = time.time()
    try:
      logs = self._train_function(self._iterator)
    except tf.errors.DataLossError as error:
      raise _named_data_loss(self.config, not self._reads_pipeline, error, step) from None
    if step == self._timed_step:
      logging.info("first step after the resume (skip included): %.1f s", time.time() - start)
    # This step's own values (not averaged): the weights were updated only if it was finite.
    step_values = {name: logs.pop(name) for name in list(logs) if name.startswith("step_")}
    self._logs = logs
    return step_values

  def train_logs(self):
    logs = {name: float(value) for name, value in self._logs.items()}
    self.pretrainer.reset_metrics()
    return logs

  def validate(self, step):
    logs = self.pretrainer.evaluate(self._validation_dataset,
                                    steps=self.config.train.validation_steps, verbose=0,
                                    return_dict=True)
    logs = {name: float(value) for name, value in logs.items()}
    self.pretrainer.reset_metrics()
    return logs


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
    `Trainer.run`'s summary (also in `<model_dir>/train_summary.json`): model_dir, first_step,
    final_step, stopped_early, elapsed_seconds, examples_per_second, train_logs (last),
    validation_logs (last), validation_history, checkpoint, skipped_batches,
    skipped_corrupt_records ({file: records skipped} under `data.skip_corrupt_records`),
    interrupted_by.

  Raises:
    nonfinite.NonFiniteLossError: a step's loss or gradient was NaN / Inf and
      `train.on_nonfinite` is "stop" (the weights in memory are those before that step; no
      checkpoint is written).
  """
  task = PretrainingTask(config, train_dataset, validation_dataset)
  return trainer_lib.Trainer(task, extra_callbacks).run()
