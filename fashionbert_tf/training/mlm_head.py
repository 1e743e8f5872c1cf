"""An MLM head for a BERT checkpoint that has none, trained once with the encoder frozen.

The paper starts from Google's BERT-base, whose checkpoint carries the MLM head BERT was
pre-trained with: l_MLM (Eq. 1) starts near BERT's own loss and its gradient is of the size of the
other tasks'. A checkpoint without that head (the offline default MiniLM-L6-H384, a sentence
encoder) gives FashionBERT a random head instead: l_MLM starts at ln V = 10.3 and its gradient at
the encoder output is 10^3-10^4 times TIA's (docs/experiments/what_held_learning_back.md), which
Eq. 6 cannot balance (every weight stays within [1/4, 3/7]).

`ensure_mlm_head(config)` restores that starting point: it trains the head alone (dense + GELU +
LayerNorm + output bias; the output matrix is the word embedding table, tied and frozen like the
rest of the encoder) on the training split's texts, text only (`[CLS] text [SEP]`, no patches),
with the pipeline's whole-word masking, and writes a Hugging Face `BertForPreTraining`-style
folder: the checkpoint's own tensors plus `cls.predictions.*`, its `config.json`, and
`mlm_head_training.json` (the settings and the loss curve). Pretraining then loads it as its
encoder checkpoint (`model.mlm_head_training_steps`); the head is trained only once per folder.

Settings (not in the paper, which needs none): Adam at `model.mlm_head_learning_rate`, batches of
`train.global_batch_size` texts, `model.mlm_head_training_steps` steps, `train.seed`.
"""

import json
import os
import shutil
import time

from absl import logging
import numpy as np
import safetensors
from safetensors import numpy as safetensors_numpy
import tensorflow as tf
import tf_keras

from fashionbert_tf.data import pipeline
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.modeling.checkpoints import hf_safetensors
from fashionbert_tf.training import losses
from fashionbert_tf.utils import progress

FOLDER_NAME = "encoder_with_mlm_head"
LOG_FILE = "mlm_head_training.json"

# Hugging Face names of the head's tensors -> (our variable's attribute path, transpose?).
_HEAD_TENSORS = (
    ("cls.predictions.transform.dense.weight", ("dense", "kernel"), True),
    ("cls.predictions.transform.dense.bias", ("dense", "bias"), False),
    ("cls.predictions.transform.LayerNorm.weight", ("layer_norm", "gamma"), False),
    ("cls.predictions.transform.LayerNorm.bias", ("layer_norm", "beta"), False),
)


def mlm_head_dir(config):
  """`<train.model_dir>/encoder_with_mlm_head`: where the checkpoint with its head is written."""
  return os.path.join(config.train.model_dir, FOLDER_NAME)


def checkpoint_has_mlm_head(model_config):
  """True when the encoder checkpoint already holds `cls.predictions.*` (Hugging Face format)."""
  weights_file, _ = hf_safetensors.hf_files(model_config.encoder_checkpoint)
  with safetensors.safe_open(weights_file, framework="numpy") as handle:
    return any(key.startswith("cls.predictions.") for key in handle.keys())


def ensure_mlm_head(config):
  """The encoder checkpoint pretraining should load: trains and writes the MLM head if needed.

  Returns `model.encoder_checkpoint` unchanged when `model.mlm_head_training_steps` is 0 or the
  checkpoint has an MLM head; else the folder `mlm_head_dir(config)` (trained on first call).

  Raises:
    ValueError: `model.encoder_format` is not hf_safetensors (the only format written here).
  """
  model_config = config.model
  if model_config.mlm_head_training_steps <= 0:
    return model_config.encoder_checkpoint
  if model_config.encoder_format != "hf_safetensors":
    raise ValueError("model.mlm_head_training_steps > 0 needs model.encoder_format "
                     f"'hf_safetensors' (got {model_config.encoder_format!r})")
  if checkpoint_has_mlm_head(model_config):
    logging.info("encoder checkpoint already has an MLM head: model.mlm_head_training_steps ignored")
    return model_config.encoder_checkpoint
  folder = mlm_head_dir(config)
  log_path = os.path.join(folder, LOG_FILE)
  if os.path.exists(log_path):
    with open(log_path, encoding="utf-8") as handle:
      previous = json.load(handle)
    if previous.get("settings") == _settings(config):
      logging.info("MLM head already trained: %s", folder)
      return folder
    raise ValueError(f"{folder} holds an MLM head trained with other settings "
                     f"({previous.get('settings')}); remove it or use another train.model_dir")
  train_and_write_mlm_head(config, folder)
  return folder


def _settings(config):
  model_config = config.model
  return {"source_checkpoint": model_config.encoder_checkpoint or "MiniLM default",
          "steps": model_config.mlm_head_training_steps,
          "learning_rate": model_config.mlm_head_learning_rate,
          "batch_size": config.train.global_batch_size, "seed": config.train.seed}


def _text_batches(config):
  """(input_word_ids, input_mask, input_type_ids, masked_lm_positions / ids / weights) batches of
  the training split's texts (whole-word masked), repeated; the pairs' patches are not used."""
  dataset = pipeline.build_pretraining_dataset(
      config.data, "train", global_batch_size=config.train.global_batch_size,
      image_mode=not config.model.use_precomputed_features,
      feature_dim=config.model.feature_dim if config.model.use_precomputed_features else None)
  keys = ("input_word_ids", "input_mask", "input_type_ids", "masked_lm_positions",
          "masked_lm_ids", "masked_lm_weights")
  return dataset.map(lambda batch: {key: batch[key] for key in keys})


def train_and_write_mlm_head(config, folder):
  """Trains the MLM head with the encoder frozen, text only; writes the checkpoint folder.

  Returns the log dict written to `<folder>/mlm_head_training.json`: settings, `loss` and
  `accuracy` (masked-word accuracy) every 25 steps, `seconds`.
  """
  model_config = config.model
  steps = model_config.mlm_head_training_steps
  tf_keras.utils.set_random_seed(config.train.seed)
  model = model_builder.build_fashionbert(model_config)
  encoder, head = model.encoder, model.mlm_head
  variables = [head.dense.kernel, head.dense.bias, head.layer_norm.gamma, head.layer_norm.beta,
               head.bias]
  optimizer = tf_keras.optimizers.Adam(learning_rate=model_config.mlm_head_learning_rate)
  logging.info("training the MLM head (%s) for %d steps, encoder frozen, text only",
               ", ".join(f"{v.name} {v.shape}" for v in variables), steps)

  batches = _text_batches(config)

  # Batches are padded to their own longest text: one trace for every length, not one each.
  @tf.function(input_signature=[batches.element_spec])
  def train_step(batch):
    sequence = encoder(dict(input_word_ids=batch["input_word_ids"],
                            input_mask=batch["input_mask"],
                            input_type_ids=batch["input_type_ids"]),
                       training=False)["sequence_output"]   # outside the tape: frozen
    with tf.GradientTape() as tape:
      logits = tf.cast(head(sequence, batch["masked_lm_positions"]), tf.float32)
      weights = tf.cast(batch["masked_lm_weights"], tf.float32)
      loss = losses.masked_lm_loss(logits, batch["masked_lm_ids"], weights)
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    correct = tf.reduce_sum(losses.masked_lm_correct(logits, batch["masked_lm_ids"]) * weights)
    return loss, correct / tf.maximum(tf.reduce_sum(weights), 1.0)

  start = time.time()
  curve = {"step": [], "loss": [], "accuracy": []}
  window = []
  reporter = progress.Progress(steps, label="MLM head", unit="steps")
  for step, batch in enumerate(batches.take(steps), start=1):
    loss, accuracy = train_step(batch)
    window.append((float(loss), float(accuracy)))
    if step % 25 == 0 or step == steps:
      curve["step"].append(step)
      curve["loss"].append(float(np.mean([w[0] for w in window])))
      curve["accuracy"].append(float(np.mean([w[1] for w in window])))
      window = []
    reporter.update(1)
  seconds = time.time() - start
  logging.info("MLM head: loss %.3f -> %.3f, masked-word accuracy %.3f -> %.3f in %.0f s",
               curve["loss"][0], curve["loss"][-1], curve["accuracy"][0], curve["accuracy"][-1],
               seconds)
  _write_checkpoint(model_config, head, folder)
  log = {"settings": _settings(config), "curve": curve, "seconds": seconds}
  with open(os.path.join(folder, LOG_FILE), "w", encoding="utf-8") as handle:
    json.dump(log, handle, indent=2)
  return log


def _write_checkpoint(model_config, head, folder):
  """The source checkpoint's tensors + `cls.predictions.*` from `head`, with its config.json."""
  weights_file, config_file = hf_safetensors.hf_files(model_config.encoder_checkpoint)
  tensors = dict(safetensors_numpy.load_file(weights_file))
  for hf_name, (layer_name, variable_name), transpose in _HEAD_TENSORS:
    value = getattr(getattr(head, layer_name), variable_name).numpy().astype(np.float32)
    tensors[hf_name] = np.ascontiguousarray(value.T if transpose else value)
  tensors["cls.predictions.bias"] = head.bias.numpy().astype(np.float32)
  temporary = folder + ".tmp"
  shutil.rmtree(temporary, ignore_errors=True)
  os.makedirs(temporary)
  safetensors_numpy.save_file(tensors, os.path.join(temporary, "model.safetensors"),
                              metadata={"format": "pt"})
  shutil.copy(config_file, os.path.join(temporary, "config.json"))
  shutil.rmtree(folder, ignore_errors=True)
  os.replace(temporary, folder)
