"""`run_finetuning(config)`: click-prediction fine-tuning on search logs (paper 3.4), resumable.

Examples are the impressions of the train split's sessions: (query, title, product image) with
label 1 = clicked, 0 = shown but not clicked; loss = softmax cross-entropy of the click head
(`model.search_variant`, `search/model.py`), averaged over the global batch. A slice of the train
split's queries (`search.validation_query_fraction`, split by query like train / test) is held out
for validation: loss, accuracy and AUC in TensorBoard.

Same machinery as pretraining: the optimizer is `training/optimizer.py`'s AdamW with linear warm-up
and decay (`train.learning_rate`, `warmup_steps`, `train_steps`, weight decay, betas; the new
layers' multiplier applies to the click head and bert_img's projection), the gradient is
all-reduced then clipped to `train.gradient_clip_norm`, strategies and precision policies from
`training/strategies.py`.

Run folder (`finetune_dir(config)`: train.model_dir, or <search.runs_dir>/<variant>-L<layers> when
train.model_dir is left at its default):
  params.yaml            the config, its `model` section the search model's own (restore.py);
  ckpt-N                 tf.train.CheckpointManager over Checkpoint(model, optimizer, step);
  train/, validation/    TensorBoard scalars: loss, accuracy, learning_rate, examples/s; val AUC;
  finetune_summary.json  what `run_finetuning` returns.
A run started on a folder with checkpoints resumes from the latest: the input is a seeded shuffle
of the impressions, and the resumed input skips the batches already consumed, so it continues
exactly where the checkpointed run was.
"""

import copy
import json
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from fashionbert_tf.data import contract
from fashionbert_tf.data import search_logs
from fashionbert_tf.evaluation import metrics
from fashionbert_tf.search import catalogue as catalogue_lib
from fashionbert_tf.search import click_scoring as scoring
from fashionbert_tf.search import logs as logs_lib
from fashionbert_tf.search import search_model_builder as model_builder
from fashionbert_tf.training import callbacks as callbacks_lib
from fashionbert_tf.training import optimizer as optimizer_lib
from fashionbert_tf.training import pretrain as pretrain_lib
from fashionbert_tf.training import strategies

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
  return pretrain_lib.save_params(run_config, model_dir)


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
    if self.clip_norm > 0:
      gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
    self.optimizer.apply_gradients(zip(gradients, variables),
                                   experimental_aggregate_gradients=False)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                             batch["label"]), tf.float32))
    return loss, correct

  @tf.function
  def train_step(self, iterator):
    loss, correct = self.strategy.run(self._replica_step, args=(next(iterator),))
    loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    correct = self.strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None)
    return loss, correct / self.global_batch_size

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


def run_finetuning(config):
  """Fine-tunes (or resumes) the search model of `config`; returns a summary dict.

  Returns:
    dict: model_dir, variant, num_layers, first_step, final_step, elapsed_seconds,
    examples_per_second, train_logs (last), validation_logs (last), validation_history,
    checkpoint, initialization (what the weights started from).
  """
  train_config = config.train
  model_dir = finetune_dir(config)
  strategies.set_precision_policy(train_config)
  strategy = strategies.build_strategy(train_config)
  if train_config.mixed_precision == "mixed_float16":
    raise ValueError("fine-tuning supports train.mixed_precision float32 or mixed_bfloat16 (no "
                     "loss scaling here), not mixed_float16")
  tf_keras.utils.set_random_seed(train_config.seed)
  train_examples, validation_examples = split_examples(config)
  with strategy.scope():
    model_config = model_builder.search_model_config(config)
    model, parts = model_builder.build_search_architecture(model_config, config.search)
    optimizer = strategies.maybe_wrap_for_loss_scaling(
        optimizer_lib.build_optimizer(train_config, model.new_layer_variables), train_config)
    # Slots created now, so the train step's tf.function creates no variables and traces once.
    optimizer._create_all_weights(model.trainable_variables)  # pylint: disable=protected-access
    step = optimizer.iterations
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
  manager = tf.train.CheckpointManager(checkpoint, model_dir,
                                       max_to_keep=train_config.max_checkpoints_to_keep,
                                       checkpoint_name="ckpt")
  latest = pretrain_lib.restore_latest_readable(checkpoint, model_dir)
  if latest:
    initialization = f"resumed from {latest}"
    logging.info("resumed fine-tuning from %s at step %d", latest, int(step.numpy()))
  else:
    initialization = model_builder.initialize_search_model(model, parts, model_config,
                                                           config.search)
  save_run_params(config, model_config, model_dir)
  first_step = int(step.numpy())
  total_steps = train_config.train_steps
  summary = dict(model_dir=model_dir, variant=model_config.search_variant,
                 num_layers=int(model.encoder.num_layers), first_step=first_step,
                 final_step=first_step, elapsed_seconds=0.0, examples_per_second=0.0,
                 train_logs={}, validation_logs={}, validation_history=[], checkpoint=latest,
                 initialization=initialization, train_examples=len(train_examples),
                 validation_examples=len(validation_examples) if validation_examples else 0)
  if first_step >= total_steps:
    logging.info("the fine-tuning run in %s is complete (step %d of %d)", model_dir, first_step,
                 total_steps)
    return summary

  text_encoder = scoring.query_title_encoder(config, model_config.search_variant)
  catalogue = None
  feature_table = None
  if model.uses_image:
    product_ids = set(train_examples.product_id.tolist())
    if validation_examples is not None:
      product_ids |= set(validation_examples.product_id.tolist())
    catalogue = catalogue_lib.compute_catalogue_features(model.patch_feature_extractor, config,
                                                         product_ids)
    with strategy.scope():
      feature_table = tf.Variable(catalogue.features, trainable=False, name="catalogue_features")
  train_arrays = encode_examples(text_encoder, train_examples, catalogue)
  validation_arrays = (_limit(encode_examples(text_encoder, validation_examples, catalogue),
                              config.search.validation_max_examples)
                       if validation_examples is not None else None)
  logging.info("fine-tuning %s (%d layers) on %d impressions (%.1f%% clicked), %d validation; "
               "text length %d", model_config.search_variant, model.encoder.num_layers,
               len(train_examples), 100.0 * train_examples.clicked.mean(),
               summary["validation_examples"], train_arrays["input_word_ids"].shape[1])
  dataset = training_dataset(train_arrays, train_config.global_batch_size, train_config.seed,
                             skip_batches=first_step)
  iterator = iter(strategy.experimental_distribute_dataset(dataset))
  trainer = ClickTrainer(model, optimizer, strategy, train_config, feature_table)
  reporters = callbacks_lib.StepCallbacks(
      [callbacks_lib.ScalarSummaries(model_dir, train_config.log_every_steps),
       callbacks_lib.ProgressLogger(total_steps, train_config.log_every_steps, first_step,
                                    label="search fine-tuning")], model)
  reporters.on_train_begin()

  def validate(at_step):
    logs = validation_logs(trainer, validation_arrays)
    reporters.on_epoch_end(at_step, {f"val_{k}": v for k, v in logs.items()})
    summary["validation_logs"] = logs
    summary["validation_history"].append(dict(step=at_step, **logs))
    logging.info("step %d validation: %s", at_step,
                 ", ".join(f"{k} {v:.4f}" for k, v in logs.items()))

  if validation_arrays is not None and first_step == 0:
    validate(0)   # where fine-tuning starts (a TIA-initialized FashionBERT head ranks already)
  start = window_start = time.time()
  window = {"steps": 0, "loss": 0.0, "accuracy": 0.0}
  current = first_step
  while current < total_steps:
    loss, accuracy = trainer.train_step(iterator)
    loss = float(loss)
    if not np.isfinite(loss):
      raise pretrain_lib.NonFiniteLossError(
          f"fine-tuning step {current + 1}: loss is {loss}; no checkpoint written for it")
    current += 1
    window["steps"] += 1
    window["loss"] += loss
    window["accuracy"] += float(accuracy)
    last = current == total_steps
    if current % train_config.log_every_steps == 0 or last:
      logs = {"loss": window["loss"] / window["steps"],
              "accuracy": window["accuracy"] / window["steps"],
              "learning_rate": pretrain_lib.current_learning_rate(optimizer, current),
              "examples_per_second": window["steps"] * train_config.global_batch_size /
                                     max(time.time() - window_start, 1e-9)}
      reporters.on_train_batch_end(current, logs)
      summary["train_logs"] = logs
      window = {"steps": 0, "loss": 0.0, "accuracy": 0.0}
      window_start = time.time()
    if validation_arrays is not None and (current % train_config.validation_every_steps == 0
                                          or last):
      validate(current)
      window_start = time.time()
    if current % train_config.checkpoint_every_steps == 0 or last:
      summary["checkpoint"] = manager.save(checkpoint_number=current)
  reporters.on_train_end()
  elapsed = time.time() - start
  summary.update(final_step=int(step.numpy()), elapsed_seconds=elapsed,
                 examples_per_second=(current - first_step) * train_config.global_batch_size /
                 max(elapsed, 1e-9))
  with tf.io.gfile.GFile(os.path.join(model_dir, "finetune_summary.json"), "w") as handle:
    json.dump(summary, handle, indent=2)
  logging.info("fine-tuning done: step %d, %.1f s, %.1f examples/s", summary["final_step"],
               elapsed, summary["examples_per_second"])
  return summary
