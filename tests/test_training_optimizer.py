"""Optimizer and schedule (paper 3.1), strategy selection and config checks."""

import os

import numpy as np
import pytest

from fashionbert_tf.configs import train as train_config_lib
from fashionbert_tf.training import optimizer as optimizer_lib
from fashionbert_tf.training import strategies


def test_paper_adamw_settings_and_weight_decay_exclusions():
  config = train_config_lib.TrainConfig()
  optimizer = optimizer_lib.build_optimizer(config)
  assert type(optimizer).__name__ == "AdamWeightDecay"
  hyper = optimizer.get_config()
  assert hyper["beta_1"] == pytest.approx(0.95) and hyper["beta_2"] == pytest.approx(0.999)
  assert hyper["weight_decay_rate"] == pytest.approx(1e-4)
  decays = optimizer._do_use_weight_decay  # pylint: disable=protected-access
  assert decays("encoder/transformer/layer_0/intermediate/kernel:0")
  assert decays("encoder/word_embeddings/embeddings:0")
  assert not decays("encoder/transformer/layer_0/output_layer_norm/gamma:0")
  assert not decays("fashionbert/cls/predictions/transform/LayerNorm/beta:0")
  assert not decays("encoder/transformer/layer_0/intermediate/bias:0")


def test_warmup_then_linear_decay():
  config = train_config_lib.TrainConfig(train_steps=100, warmup_steps=10, learning_rate=2e-5)
  schedule = optimizer_lib.build_learning_rate(config)
  lr = lambda step: float(schedule(step))
  assert lr(0) == pytest.approx(0.0, abs=1e-12)
  # Warm-up: linear from 0 to the decayed value at the end of warm-up.
  peak = 2e-5 * (1 - 10 / 100)
  assert lr(5) == pytest.approx(peak / 2, rel=1e-5)
  assert lr(10) == pytest.approx(peak, rel=1e-5)
  # Then linear decay to 0 at train_steps.
  np.testing.assert_allclose([lr(s) for s in (20, 55, 100)],
                             [2e-5 * (1 - s / 100) for s in (20, 55, 100)], rtol=1e-5, atol=1e-12)


def test_no_warmup_is_allowed():
  schedule = optimizer_lib.build_learning_rate(
      train_config_lib.TrainConfig(train_steps=10, warmup_steps=0, learning_rate=1.0))
  assert float(schedule(0)) == pytest.approx(1.0) and float(schedule(5)) == pytest.approx(0.5)


def test_config_rejects_unknown_choices():
  with pytest.raises(ValueError, match="train.loss_weighting"):
    train_config_lib.TrainConfig(loss_weighting="uniform").validate()
  with pytest.raises(ValueError, match="train.mixed_precision"):
    train_config_lib.TrainConfig(mixed_precision="float16").validate()
  train_config_lib.TrainConfig().validate()


def test_strategies(monkeypatch):
  strategy = strategies.build_strategy(train_config_lib.TrainConfig(strategy="one_device"))
  assert strategy.num_replicas_in_sync == 1 and strategies.is_chief(strategy)
  assert strategies.worker_dir("runs/x", strategy) == "runs/x"
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="TF_CONFIG"):
    strategies.build_strategy(train_config_lib.TrainConfig(strategy="multi_worker"))
  monkeypatch.setenv("TF_CONFIG", "{not json")
  with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
    strategies.build_strategy(train_config_lib.TrainConfig(strategy="multi_worker"))
  assert os.environ["TF_CONFIG"] == "{not json"


def test_new_layers_learning_rate_multiplier_scales_only_their_steps():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = train_config_lib.TrainConfig(
      train_steps=100, warmup_steps=10, learning_rate=1e-3, weight_decay=0.01,
      new_layers_learning_rate_multiplier=10.0)
  new = tf.Variable(np.ones([2, 3], np.float32), name="patch_embedding/projection/kernel")
  old = tf.Variable(np.ones([2, 3], np.float32), name="encoder/transformer/layer_0/kernel")
  optimizer = optimizer_lib.build_optimizer(config, new_layer_variables=[new])
  reference = optimizer_lib.build_optimizer(
      train_config_lib.TrainConfig(train_steps=100, warmup_steps=10, learning_rate=1e-3,
                                   weight_decay=0.01))
  assert type(reference).__name__ == "AdamWeightDecay"
  twin = tf.Variable(np.ones([2, 3], np.float32), name="twin")
  gradient = tf.constant(np.linspace(-1, 2, 6, dtype=np.float32).reshape(2, 3))
  for _ in range(3):   # inside the warm-up: the multiplier follows the schedule
    optimizer.apply_gradients([(gradient, new), (gradient, old)])
    reference.apply_gradients([(gradient, twin)])
  np.testing.assert_allclose(old.numpy(), twin.numpy(), rtol=1e-6)          # untouched: the paper
  np.testing.assert_allclose(1 - new.numpy(), 10 * (1 - twin.numpy()), rtol=1e-3)
  assert optimizer_lib.variable_key("patch_embedding/projection/kernel/replica_1:0") == (
      "patch_embedding/projection/kernel")
  with pytest.raises(ValueError, match="new_layers_learning_rate_multiplier"):
    train_config_lib.TrainConfig(new_layers_learning_rate_multiplier=0.0).validate()
