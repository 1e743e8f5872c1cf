"""An MLM head trained once for a checkpoint without one (training/mlm_head.py).

A tiny Hugging Face BERT without `cls.*` tensors, written here; the head is trained on the tiny toy
data's texts with the encoder frozen. The written checkpoint must hold the source tensors unchanged
plus a head that predicts masked words better than the random one, load into FashionBERT as its
MLM head, and be trained only once.
"""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file
import tensorflow as tf

from fashionbert_tf.configs.experiment import ExperimentConfig
from fashionbert_tf.configs.model import ModelConfig
from fashionbert_tf.configs.train import TrainConfig
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.training import losses
from fashionbert_tf.training import mlm_head
from fashionbert_tf.training import pretrain

from test_model_checkpoints import write_hf_bert

HEAD_KEYS = {"cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
             "cls.predictions.transform.LayerNorm.weight",
             "cls.predictions.transform.LayerNorm.bias", "cls.predictions.bias"}


def experiment(tmp_path, data_config, checkpoint, steps=150):
  return ExperimentConfig(
      data=data_config,
      model=ModelConfig(backbone="linear", feature_dim=16, encoder_format="hf_safetensors",
                        encoder_checkpoint=checkpoint, mlm_head_training_steps=steps,
                        mlm_head_learning_rate=1e-2),
      train=TrainConfig(model_dir=str(tmp_path / "run"), global_batch_size=8, seed=5))


def heldout_mlm_loss(model, data_config):
  """Mean MLM loss (Eq. 1) of `model`'s head over validation texts, text only."""
  from fashionbert_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  dataset = pipeline.build_pretraining_dataset(data_config, "validation", global_batch_size=8)
  values = []
  for batch in dataset.take(3):
    sequence = model.encoder(dict(input_word_ids=batch["input_word_ids"],
                                  input_mask=batch["input_mask"],
                                  input_type_ids=batch["input_type_ids"]))["sequence_output"]
    logits = model.mlm_head(sequence, batch["masked_lm_positions"])
    values.append(float(losses.masked_lm_loss(logits, batch["masked_lm_ids"],
                                              tf.cast(batch["masked_lm_weights"], tf.float32))))
  return float(np.mean(values))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy_data_config):
  tmp_path = tmp_path_factory.mktemp("mlm_head")
  with open(toy_data_config.vocab_file, encoding="utf-8") as handle:
    vocab_size = len(handle.read().split("\n")) - 1
  source_dir = str(tmp_path / "bert")
  write_hf_bert(source_dir, prefix="", with_heads=False, vocab_size=vocab_size)
  config = experiment(tmp_path, toy_data_config, source_dir)
  folder = mlm_head.ensure_mlm_head(config)
  return config, source_dir, folder


def test_the_head_is_written_beside_the_unchanged_encoder(trained):
  config, source_dir, folder = trained
  assert folder == os.path.join(config.train.model_dir, "encoder_with_mlm_head")
  source = load_file(os.path.join(source_dir, "model.safetensors"))
  written = load_file(os.path.join(folder, "model.safetensors"))
  assert set(written) == set(source) | HEAD_KEYS
  for key, value in source.items():   # the encoder was frozen
    np.testing.assert_array_equal(written[key], value, err_msg=key)
  with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
    assert json.load(handle)["vocab_size"] == written["cls.predictions.bias"].shape[0]


def test_the_trained_head_predicts_masked_words_better_than_a_random_one(trained):
  config, source_dir, folder = trained
  with open(os.path.join(folder, mlm_head.LOG_FILE), encoding="utf-8") as handle:
    curve = json.load(handle)["curve"]
  assert curve["step"][-1] == 150
  assert curve["loss"][-1] < 0.8 * curve["loss"][0]
  random_head = model_builder.build_fashionbert(
      config.model.replace(encoder_checkpoint=source_dir))
  trained_head = model_builder.build_fashionbert(config.model.replace(encoder_checkpoint=folder))
  assert (heldout_mlm_loss(trained_head, config.data) <
          0.6 * heldout_mlm_loss(random_head, config.data))


def test_pretraining_loads_the_head_and_it_is_trained_once(trained):
  config, _, folder = trained
  log_path = os.path.join(folder, mlm_head.LOG_FILE)
  before = os.path.getmtime(log_path)
  derived = pretrain.with_mlm_head(config)
  assert derived.model.encoder_checkpoint == folder
  assert os.path.getmtime(log_path) == before           # not trained again
  model = model_builder.build_fashionbert(derived.model)
  written = load_file(os.path.join(folder, "model.safetensors"))
  np.testing.assert_array_equal(model.mlm_head.bias.numpy(), written["cls.predictions.bias"])
  np.testing.assert_array_equal(model.mlm_head.dense.kernel.numpy(),
                                written["cls.predictions.transform.dense.weight"].T)
  # A checkpoint that has a head is used as it is.
  assert mlm_head.ensure_mlm_head(derived.replace(train={"model_dir": "elsewhere"})) == folder


def test_a_head_trained_with_other_settings_is_not_silently_reused(trained):
  config, _, folder = trained
  other = config.replace(model={"mlm_head_training_steps": 151})
  with pytest.raises(ValueError, match="other settings"):
    mlm_head.ensure_mlm_head(other)
  assert mlm_head.ensure_mlm_head(config.replace(model={"mlm_head_training_steps": 0})) == (
      config.model.encoder_checkpoint)
