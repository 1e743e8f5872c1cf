"""Rank@K and TIA accuracy against hand-made score matrices (paper 3.1)."""

import numpy as np
import pytest

from fashionbert_tf.evaluation import metrics


def test_ground_truth_first_and_last_column():
  scores = np.array([
      [0.9, 0.1, 0.2, 0.3],   # ground truth (col 0) is the best: rank 1
      [0.9, 0.1, 0.2, 0.3],   # ground truth (col 3) third best: rank 2
      [0.5, 0.6, 0.7, 0.1],   # ground truth (col 3) is the worst: rank 4
      [0.1, 0.6, 0.7, 0.8],   # ground truth (col 0) is the worst: rank 4
  ])
  truth = np.array([0, 3, 3, 0])
  np.testing.assert_array_equal(metrics.ground_truth_ranks(scores, truth), [1, 2, 4, 4])
  result = metrics.rank_at_k(scores, truth, ks=(1, 2, 3, 4))
  assert result == {1: 0.25, 2: 0.5, 3: 0.5, 4: 1.0}


def test_ties_count_against_the_ground_truth():
  # All equal: every other candidate ties, so the ground truth is last (rank C), in any column.
  flat = np.full((2, 5), 0.5)
  np.testing.assert_array_equal(metrics.ground_truth_ranks(flat, [0, 4]), [5, 5])
  assert metrics.rank_at_k(flat, [0, 4], ks=(1, 4, 5)) == {1: 0.0, 4: 0.0, 5: 1.0}
  # One tie with a better candidate above it: 0.8 > 0.7 == 0.7 -> rank 3, not 2.
  scores = np.array([[0.8, 0.7, 0.7, 0.1]])
  np.testing.assert_array_equal(metrics.ground_truth_ranks(scores, [2]), [3])
  np.testing.assert_array_equal(metrics.ground_truth_ranks(scores, [1]), [3])
  assert metrics.rank_at_k(scores, [2], ks=(2, 3)) == {2: 0.0, 3: 1.0}


def test_rank_at_k_matches_a_sort_on_random_untied_scores():
  rng = np.random.default_rng(0)
  scores = rng.random((200, 101))
  truth = rng.integers(0, 101, size=200)
  order = np.argsort(-scores, axis=1)
  expected_ranks = np.array([np.flatnonzero(order[q] == truth[q])[0] + 1 for q in range(200)])
  np.testing.assert_array_equal(metrics.ground_truth_ranks(scores, truth), expected_ranks)
  result = metrics.rank_at_k(scores, truth, ks=(1, 5, 10))
  for k in (1, 5, 10):
    assert result[k] == pytest.approx(np.mean(expected_ranks <= k))


def test_rank_at_k_rejects_bad_input():
  with pytest.raises(ValueError, match="outside"):
    metrics.rank_at_k(np.zeros((2, 3)), [0, 3])
  with pytest.raises(ValueError, match="NaN"):
    metrics.rank_at_k(np.array([[0.1, np.nan]]), [0])
  with pytest.raises(ValueError, match=r"\[Q, C\]"):
    metrics.rank_at_k(np.zeros(3), [0])
  with pytest.raises(ValueError, match="k must be"):
    metrics.rank_at_k(np.zeros((1, 3)), [0], ks=(0,))


def test_tia_accuracy():
  probability = np.array([0.9, 0.2, 0.6, 0.4, 0.5])
  labels = np.array([1, 0, 0, 1, 0])
  # correct: 0.9->1 yes, 0.2->0 yes, 0.6->1 no, 0.4->0 no, 0.5->0 (tie goes to no match) yes.
  assert metrics.tia_accuracy(probability, labels) == pytest.approx(3 / 5)
  with pytest.raises(ValueError, match="same shape"):
    metrics.tia_accuracy(probability, labels[:3])
  with pytest.raises(ValueError, match="0 or 1"):
    metrics.tia_accuracy(probability, np.array([1, 0, 2, 1, 0]))
