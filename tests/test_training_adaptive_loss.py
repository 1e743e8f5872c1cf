"""Paper Eq. 6 and the three weighting modes of `fashionbert_tf.training.adaptive_loss`."""

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.training import adaptive_loss


def eq6_by_hand(g):
  """w_i = (L - g_i)^-1 / sum_j (L - g_j)^-1, written out term by term."""
  big_l = len(g)
  inverses = [1.0 / (big_l - gi) for gi in g]
  total = sum(inverses)
  return [inverse / total for inverse in inverses]


@pytest.mark.parametrize("g", [
    [0.0, 0.0, 0.0],
    [1.0, 1.0, 1.0],
    [1.0, 0.0, 0.0],
    [0.2, 0.5, 0.3],
    [0.9, 0.05, 0.6],
    [0.25, 0.75],
    [0.1, 0.2, 0.3, 0.4],
])
def test_loss_weights_match_eq6_by_hand(g):
  weights = adaptive_loss.loss_weights(tf.constant(g)).numpy()
  np.testing.assert_allclose(weights, eq6_by_hand(g), rtol=1e-6)
  assert abs(weights.sum() - 1.0) < 1e-6


def test_loss_weights_worked_example():
  # g = (1, 0, 0), L = 3: inverses (1/2, 1/3, 1/3), sum 7/6 -> (3/7, 2/7, 2/7).
  np.testing.assert_allclose(adaptive_loss.loss_weights([1.0, 0.0, 0.0]).numpy(),
                             [3 / 7, 2 / 7, 2 / 7], rtol=1e-6)


def test_larger_g_gets_larger_weight():
  weights = adaptive_loss.loss_weights([0.1, 0.6, 0.3]).numpy()
  assert weights[1] > weights[2] > weights[0]


@pytest.mark.parametrize("g", [[np.nan, 0.5, 0.5], [5.0, -3.0, 0.5], [np.inf, -np.inf, 0.0]])
def test_loss_weights_finite_outside_the_unit_interval(g):
  weights = adaptive_loss.loss_weights(tf.constant(g, tf.float32)).numpy()
  assert np.all(np.isfinite(weights)) and abs(weights.sum() - 1) < 1e-6
  assert np.all(weights > 0)


def test_fixed_weights_are_one_third():
  np.testing.assert_allclose(adaptive_loss.fixed_weights().numpy(), [1 / 3] * 3, rtol=1e-7)


def test_loss_softmax_weights_follow_the_authors_code():
  losses = np.array([2.0, 0.5, 0.7], np.float32)
  softmax = np.exp(losses) / np.exp(losses).sum()
  expected = eq6_by_hand(list(softmax ** 2))
  np.testing.assert_allclose(adaptive_loss.loss_softmax_weights(losses).numpy(), expected,
                             rtol=1e-6)


@pytest.mark.parametrize("losses", [[1e30, 0.0, 1.0], [np.inf, 1.0, 1.0], [np.nan, 1.0, 2.0],
                                    [0.0, 0.0, 0.0], [-np.inf, 3.0, 3.0]])
def test_loss_softmax_weights_finite_at_extremes(losses):
  weights = adaptive_loss.loss_softmax_weights(tf.constant(losses, tf.float32)).numpy()
  assert np.all(np.isfinite(weights)) and abs(weights.sum() - 1) < 1e-6


@pytest.mark.parametrize("normalization", ["sum", "max"])
def test_grad_norm_weights_by_hand(normalization):
  s = np.array([4.0, 1.0, 0.25])
  g = s / (s.sum() if normalization == "sum" else s.max())
  weights = adaptive_loss.grad_norm_weights(s, normalization).numpy()
  np.testing.assert_allclose(weights, eq6_by_hand(list(g)), rtol=1e-6)


@pytest.mark.parametrize("normalization", ["sum", "max"])
@pytest.mark.parametrize("squared_norms,expected_g", [
    ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),                     # zero gradients: w = 1/3
    ([3e38, 3e38, 0.0], None),                               # finite but the sum overflows
    ([np.inf, 1.0, 2.0], [1.0, 0.0, 0.0]),                   # overflowed norm wins
    ([np.nan, 1.0, 1.0], None),                              # NaN read as 0
    ([1e-30, 1e-38, 0.0], None),                             # tiny
])
def test_grad_norm_weights_finite_at_extremes(normalization, squared_norms, expected_g):
  g = adaptive_loss.normalize_squared_norms(tf.constant(squared_norms, tf.float32),
                                            normalization).numpy()
  assert np.all(np.isfinite(g)) and np.all(g >= 0) and np.all(g <= 1)
  if expected_g is not None:
    np.testing.assert_allclose(g, expected_g, atol=1e-7)
  weights = adaptive_loss.grad_norm_weights(tf.constant(squared_norms, tf.float32),
                                            normalization).numpy()
  assert np.all(np.isfinite(weights)) and abs(weights.sum() - 1) < 1e-6


def test_grad_norm_normalization_is_scale_invariant():
  s = tf.constant([3.0, 1.0, 0.5])
  np.testing.assert_allclose(adaptive_loss.grad_norm_weights(s).numpy(),
                             adaptive_loss.grad_norm_weights(s * 1024.0 ** 2).numpy(), rtol=1e-6)


def test_weights_are_constants_for_the_optimizer():
  losses = tf.Variable([1.0, 2.0, 3.0])
  with tf.GradientTape() as tape:
    weights = adaptive_loss.loss_softmax_weights(losses)
    total = tf.reduce_sum(weights * losses)
  # Only the direct dependence through `losses` remains: d total / d losses = weights.
  np.testing.assert_allclose(tape.gradient(total, losses).numpy(), weights.numpy(), rtol=1e-6)


def test_squared_norm_densifies_repeated_indexed_slices():
  slices = tf.IndexedSlices(values=tf.constant([[1.0, 2.0], [3.0, 4.0]]),
                            indices=tf.constant([1, 1]), dense_shape=tf.constant([3, 2]))
  # Dense gradient row 1 = (4, 6): squared norm 52, not 1 + 4 + 9 + 16 = 30.
  assert float(adaptive_loss.squared_norm([slices, None, tf.constant([1.0])])) == 53.0


def test_unknown_mode_is_an_error():
  with pytest.raises(ValueError, match="unknown loss weighting"):
    adaptive_loss.weights_for_mode("uniform")


def test_fixed_loss_weights_are_used_as_given():
  weights = adaptive_loss.weights_for_mode("fixed", fixed=[0.0, 0.0, 1.0])
  np.testing.assert_array_equal(weights.numpy(), [0.0, 0.0, 1.0])
  np.testing.assert_allclose(adaptive_loss.weights_for_mode("fixed", fixed=[]).numpy(), [1 / 3] * 3)


@pytest.mark.parametrize("bad", [[1.0, 1.0], [0.0, 0.0, 0.0], [1.0, -1.0, 1.0],
                                 [1.0, float("nan"), 1.0]])
def test_bad_fixed_loss_weights_name_the_option(bad):
  from fashionbert_tf.configs import experiment as experiment_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="train.fixed_loss_weights"):
    experiment_config.load_config(None, [{"train": {"loss_weighting": "fixed",
                                                    "fixed_loss_weights": bad}}]).train.validate()
