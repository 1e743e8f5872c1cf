"""The three pre-training losses (paper Eq. 1-3) against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.training import losses


def log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_masked_lm_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 11)).astype(np.float32)
  ids = rng.integers(0, 11, size=(3, 4)).astype(np.int32)
  weights = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], np.float32)
  nll = -np.take_along_axis(log_softmax(logits), ids[..., None], -1)[..., 0]
  expected = (nll * weights).sum() / weights.sum()
  np.testing.assert_allclose(losses.masked_lm_loss(logits, ids, weights).numpy(), expected,
                             rtol=1e-5)
  np.testing.assert_allclose(
      losses.masked_lm_loss(logits, ids, weights, normalizer=20.0).numpy(),
      (nll * weights).sum() / 20.0, rtol=1e-5)


def test_masked_patch_loss_is_kl_original_to_predicted():
  rng = np.random.default_rng(1)
  predicted = rng.normal(size=(2, 3, 7)).astype(np.float32)
  original = rng.normal(size=(2, 3, 7)).astype(np.float32) * 3
  weights = np.array([[1, 1, 0], [0, 1, 1]], np.float32)
  log_p, log_q = log_softmax(original), log_softmax(predicted)
  kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
  expected = (kl * weights).sum() / weights.sum()
  np.testing.assert_allclose(losses.masked_patch_loss(predicted, original, weights).numpy(),
                             expected, rtol=1e-5)
  # KL is zero when the prediction equals the original distribution (any shift of the logits).
  assert abs(float(losses.masked_patch_loss(original + 5.0, original, weights))) < 1e-5


def test_masked_patch_loss_does_not_train_the_targets():
  targets = tf.Variable(tf.random.normal([1, 2, 5]))
  logits = tf.Variable(tf.random.normal([1, 2, 5]))
  with tf.GradientTape() as tape:
    loss = losses.masked_patch_loss(logits, targets, tf.ones([1, 2]))
  target_grad, logit_grad = tape.gradient(loss, [targets, logits])
  assert target_grad is None and logit_grad is not None


def test_alignment_loss_is_binary_cross_entropy():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(6, 2)).astype(np.float32)
  labels = np.array([1, 0, 1, 1, 0, 0], np.int32)
  p_match = np.exp(logits[:, 1]) / np.exp(logits).sum(-1)
  expected = -np.mean(labels * np.log(p_match) + (1 - labels) * np.log(1 - p_match))
  np.testing.assert_allclose(losses.alignment_loss(logits, labels).numpy(), expected, rtol=1e-5)
  correct = losses.alignment_correct(logits, labels).numpy()
  np.testing.assert_array_equal(correct, (logits.argmax(-1) == labels).astype(np.float32))


def test_positive_pairs_only_by_default_and_empty_batch_is_zero():
  labels = tf.constant([1, 0, 1])
  np.testing.assert_array_equal(losses.example_weights_for_masked_losses(labels).numpy(),
                                [1, 0, 1])
  np.testing.assert_array_equal(losses.example_weights_for_masked_losses(labels, "all").numpy(),
                                [1, 1, 1])
  with pytest.raises(ValueError, match="masked_losses_on"):
    losses.example_weights_for_masked_losses(labels, "negative")
  logits = tf.random.normal([2, 3, 5])
  assert float(losses.masked_lm_loss(logits, tf.zeros([2, 3], tf.int32), tf.zeros([2, 3]))) == 0.0
