"""`run_finetuning(config)`: click-prediction fine-tuning on search logs (paper 3.4), a task on
`training/trainer.py`'s `Trainer`.

Examples are the impressions of the train split's sessions: (query, title, product image) with
label 1 = clicked, 0 = shown but not clicked; loss = softmax cross-entropy of the click head
(`model.search_variant`, `search/model.py`), averaged over the global batch. A slice of the train
split's queries (`search.validation_query_fraction`, split by query like train / test) is held out
for validation: loss, accuracy and AUC, at step 0 of a fresh run (where fine-tuning starts: a
TIA-initialized FashionBERT head ranks already) and every `train.validation_every_steps`.

The trainer runs it as it runs pre-training: the run folder, checkpoints and resume, SIGTERM /
SIGINT (checkpoint and stop), `train.on_nonfinite` (a NaN / Inf step applies no update; stop or
skip the batch), the logging / validation / checkpoint cadence and TensorBoard. The optimizer is
`training/optimizer.py`'s AdamW with linear warm-up and decay (`train.learning_rate`,
`warmup_steps`, `train_steps`, weight decay, betas; the new layers' multiplier applies to the click
head and bert_img's projection), the gradient is all-reduced then clipped to
`train.gradient_clip_norm`, strategies and precision policies from `training/strategies.py`. No
early stopping.

Run folder (`finetune_dir(config)`: train.model_dir, or <search.runs_dir>/<variant>-L<layers> when
train.model_dir is left at its default):
  params.yaml            the config, its `model` section the search model's own (restore.py);
  ckpt-N                 tf.train.CheckpointManager over Checkpoint(model, optimizer, step);
  train/, validation/    TensorBoard scalars: loss, accuracy, skipped_batches, learning_rate,
                         examples/s; val loss, accuracy, AUC;
  finetune_summary.json  what `run_finetuning` returns.
A run started on a folder with checkpoints resumes from the latest: the input is a seeded shuffle
of the impressions, and the resumed input skips the batches already consumed, so it continues
exactly where the checkpointed run was.
"""

import copy
import os

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import search_logs
from fashionbert_tf.evaluation import metrics
from fashionbert_tf.search import catalogue as catalogue_lib
from fashionbert_tf.search import click_scoring as scoring
from fashionbert_tf.search import logs as logs_lib
from fashionbert_tf.search import search_model_builder as model_builder
from fashionbert_tf.training import nonfinite
from fashionbert_tf.training import optimizer as optimizer_lib
from fashionbert_tf.training import strategies
from fashionbert_tf.training import trainer as trainer_lib

DEFAULT_MODEL_DIR = "runs/default"   # TrainConfig's default: then the run goes under runs_dir


def finetune_dir(config):
  """The run folder of a fine-tuning config (module docstring)."""
  if config.train.model_dir and config.train.model_dir != DEFAULT_MODEL_DIR:
    return config.train.model_dir
  layers = config.model.num_layers or "all"
  return os.path.join(config.search.runs_dir, f"{config.model.search_variant}-L{layers}")


def split_examples(config):
  """(train, validation) `ImpressionExamples` of the train split (validation: held-out queries)."""
  logs_dir = logs_lib.ensure_search_logs(config)
  sessions = search_logs.read_split(logs_dir, "train")
  fraction = config.search.validation_query_fraction
  if fraction > 0:
    train, validation = search_logs.split_by_query(sessions, fraction, config.train.seed)
  else:
    train, validation = sessions, []
  return (search_logs.impression_examples(train),
          search_logs.impression_examples(validation) if validation else None)


def encode_examples(text_encoder, examples, catalogue, chunk=4096):
  """Numpy arrays of the examples: text ids padded to the longest [N, L], product rows, labels."""
  parts = [text_encoder.encode(examples.query[i:i + chunk], examples.title[i:i + chunk])
           for i in range(0, len(examples), chunk)]
  length = max(int(p["input_word_ids"].shape[1]) for p in parts)
  arrays = {key: np.concatenate([np.pad(p[key].numpy(), [[0, 0], [0, length - p[key].shape[1]]])
                                 for p in parts]) for key in contract.TEXT_KEYS}
  arrays["product_row"] = (catalogue.indices(examples.product_id) if catalogue is not None
                           else np.zeros(len(examples), np.int32))
  arrays["label"] = examples.clicked.astype(np.int32)
  return arrays


def training_dataset(arrays, global_batch_size, seed, skip_batches=0):
  """Repeated, seeded-shuffle batches of the encoded examples (deterministic; resumable)."""
  dataset = tf.data.Dataset.from_tensor_slices(arrays)
  dataset = dataset.shuffle(len(arrays["label"]), seed=seed, reshuffle_each_iteration=True)
  dataset = dataset.repeat().batch(global_batch_size, drop_remainder=True)
  if skip_batches:
    dataset = dataset.skip(skip_batches)
  return dataset.prefetch(2)


def save_run_params(config, model_config, model_dir):
  """params.yaml with the search model's own model section (what restore.py rebuilds)."""
  run_config = copy.deepcopy(config)
  run_config.model = model_config
  run_config.train.model_dir = model_dir
  return trainer_lib.save_params(run_config, model_dir)


class ClickTrainer:
  """The distributed train step and the validation scoring of one fine-tuning run."""

  def __init__(self, model, optimizer, strategy, train_config, feature_table):
    self.model = model
    self.optimizer = optimizer
    self.strategy = strategy
    self.global_batch_size = train_config.global_batch_size
    self.clip_norm = train_config.gradient_clip_norm
    self.feature_table = feature_table   # tf.Variable [P, 64, D] or None

  def model_inputs(self, batch):
    inputs = {key: batch[key] for key in contract.TEXT_KEYS}
    if self.feature_table is not None:
      inputs[contract.FEATURES_KEY] = tf.gather(self.feature_table, batch["product_row"])
    return inputs

  def _replica_step(self, batch):
    with tf.GradientTape() as tape:
      logits = self.model(self.model_inputs(batch), training=True)["click_logits"]
      per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(batch["label"], logits)
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
    variables = self.model.trainable_variables
    gradients = tape.gradient(loss, variables)
    context = tf.distribute.get_replica_context()
    gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
    # Global values, equal on every replica: all replicas apply the update or none does.
    gradient_norm = tf.linalg.global_norm(gradients)
    finite = tf.logical_and(
        tf.math.is_finite(context.all_reduce(tf.distribute.ReduceOp.SUM, loss)),
        tf.math.is_finite(gradient_norm))
    if self.clip_norm > 0:
      gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm, use_norm=gradient_norm)
    nonfinite.apply_gradients_if_finite(self.optimizer, gradients, variables, finite)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                             batch["label"]), tf.float32))
    return loss, correct, tf.cast(finite, tf.float32), gradient_norm

  @tf.function
  def train_step(self, iterator):
    """One step on the next global batch: this step's loss, accuracy, finite (1. or 0.: the
    update was applied) and gradient norm (before clipping)."""
    loss, correct, finite, gradient_norm = self.strategy.run(self._replica_step,
                                                             args=(next(iterator),))
    loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    correct = self.strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None)
    # Equal on every replica: any replica's copy.
    finite = self.strategy.experimental_local_results(finite)[0]
    gradient_norm = self.strategy.experimental_local_results(gradient_norm)[0]
    return loss, correct / self.global_batch_size, finite, gradient_norm

  def probabilities(self, arrays, batch_size=128):
    """P(click) float32 [N] of encoded examples (inference mode, one device)."""
    call = tf.function(lambda inputs: tf.nn.softmax(
        self.model(inputs, training=False)["click_logits"], -1)[:, 1], reduce_retracing=True)
    out = []
    for begin in range(0, len(arrays["label"]), batch_size):
      batch = {key: tf.constant(value[begin:begin + batch_size]) for key, value in arrays.items()}
      out.append(call(self.model_inputs(batch)).numpy())
    return np.concatenate(out)


def validation_logs(trainer, arrays):
  """loss, accuracy and AUC of the validation slice."""
  probability = trainer.probabilities(arrays)
  labels = arrays["label"]
  clipped = np.clip(probability, 1e-7, 1 - 1e-7)
  loss = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
  logs = {"loss": loss, "accuracy": metrics.click_accuracy(probability, labels)}
  if 0 < labels.sum() < len(labels):
    logs["auc"] = metrics.roc_auc(labels, probability)
  return logs


def _limit(arrays, count):
  return {key: value[:count] for key, value in arrays.items()} if count else arrays


class FinetuningTask(trainer_lib.Task):
  """Search fine-tuning as a `trainer.Task` (module docstring)."""

  name = "search fine-tuning"
  summary_file = "finetune_summary.json"
  step_value_names = ("loss", "gradient_norm")
  validates_at_start = True

  def __init__(self, config):
    super().__init__(config, finetune_dir(config))
    if config.train.mixed_precision == "mixed_float16":
      raise ValueError("fine-tuning supports train.mixed_precision float32, mixed_bfloat16 or auto "
                       "(no loss scaling here), not mixed_float16")
    self.model_config = model_builder.search_model_config(config)
    self.parts = None
    self.initialization = None
    self.train_examples = self.validation_examples = None
    # Set by prepare_training.
    self.train_arrays = self.validation_arrays = None
    self.feature_table = None
    self.click_trainer = None
    self._iterator = None
    self._window = {"steps": 0, "loss": 0.0, "accuracy": 0.0}

  @property
  def has_validation(self):
    return self.validation_arrays is not None

  def write_params(self, model_dir):
    save_run_params(self.config, self.model_config, model_dir)

  def build(self, strategy):
    train_config = self.config.train
    self.train_examples, self.validation_examples = split_examples(self.config)
    with strategy.scope():
      self.model, self.parts = model_builder.build_search_architecture(self.model_config,
                                                                       self.config.search)
      optimizer = strategies.maybe_wrap_for_loss_scaling(
          optimizer_lib.build_optimizer(train_config, self.model.new_layer_variables),
          train_config)
      # Slots created now, so the train step's tf.function creates no variables and traces once.
      optimizer._create_all_weights(self.model.trainable_variables)  # pylint: disable=protected-access
    self.optimizer = optimizer

  def initialize(self, restored_from):
    if restored_from:
      self.initialization = f"resumed from {restored_from}"
    else:
      self.initialization = model_builder.initialize_search_model(
          self.model, self.parts, self.model_config, self.config.search)

  def summary_fields(self):
    return dict(variant=self.model_config.search_variant,
                num_layers=int(self.model.encoder.num_layers),
                initialization=self.initialization, train_examples=len(self.train_examples),
                validation_examples=(len(self.validation_examples) if self.validation_examples
                                     else 0))

  def prepare_training(self, strategy, first_step):
    config, model = self.config, self.model
    train_examples, validation_examples = self.train_examples, self.validation_examples
    text_encoder = scoring.query_title_encoder(config, self.model_config.search_variant)
    catalogue = None
    if model.uses_image:
      product_ids = set(train_examples.product_id.tolist())
      if validation_examples is not None:
        product_ids |= set(validation_examples.product_id.tolist())
      catalogue = catalogue_lib.compute_catalogue_features(model.patch_feature_extractor, config,
                                                           product_ids)
      with strategy.scope():
        self.feature_table = tf.Variable(catalogue.features, trainable=False,
                                         name="catalogue_features")
    self.train_arrays = encode_examples(text_encoder, train_examples, catalogue)
    if validation_examples is not None:
      self.validation_arrays = _limit(encode_examples(text_encoder, validation_examples, catalogue),
                                      config.search.validation_max_examples)
    logging.info("fine-tuning %s (%d layers) on %d impressions (%.1f%% clicked), %d validation; "
                 "text length %d", self.model_config.search_variant, model.encoder.num_layers,
                 len(train_examples), 100.0 * train_examples.clicked.mean(),
                 len(validation_examples) if validation_examples else 0,
                 self.train_arrays["input_word_ids"].shape[1])
    dataset = training_dataset(self.train_arrays, config.train.global_batch_size,
                               config.train.seed, skip_batches=first_step)
    self._iterator = iter(strategy.experimental_distribute_dataset(dataset))
    self.click_trainer = ClickTrainer(model, self.optimizer, strategy, config.train,
                                      self.feature_table)

  def train_step(self, step):
    loss, accuracy, finite, gradient_norm = self.click_trainer.train_step(self._iterator)
    loss = float(loss)
    if float(finite):   # the train logs average the steps that updated the weights
      self._window["steps"] += 1
      self._window["loss"] += loss
      self._window["accuracy"] += float(accuracy)
    return {"step_finite": finite, "step_loss": loss, "step_gradient_norm": gradient_norm}

  def train_logs(self):
    window = self._window
    steps = max(window["steps"], 1)   # 0 when every step of the window was skipped
    self._window = {"steps": 0, "loss": 0.0, "accuracy": 0.0}
    return {"loss": window["loss"] / steps, "accuracy": window["accuracy"] / steps}

  def validate(self, step):
    logs = validation_logs(self.click_trainer, self.validation_arrays)
    logging.info("step %d validation: %s", step,
                 ", ".join(f"{k} {v:.4f}" for k, v in logs.items()))
    return logs


def run_finetuning(config, extra_callbacks=()):
  """Fine-tunes (or resumes) the search model of `config`; returns a summary dict.

  Args:
    config: `ExperimentConfig` (sections data, model, train, search).
    extra_callbacks: more Keras callbacks driven by the loop (see `training/callbacks.py`).

  Returns:
    `Trainer.run`'s summary (also in `<run folder>/finetune_summary.json`): model_dir,
    first_step, final_step, elapsed_seconds, examples_per_second, train_logs (last),
    validation_logs (last), validation_history, checkpoint, skipped_batches, variant, num_layers,
    initialization (what the weights started from), train_examples, validation_examples,
    interrupted_by.

  Raises:
    nonfinite.NonFiniteLossError: a step's loss or gradient was NaN / Inf and
      `train.on_nonfinite` is "stop".
  """
  return trainer_lib.Trainer(FinetuningTask(config), extra_callbacks).run()
