"""Evaluation metrics of the paper (section 3.1): TIA accuracy and Rank@K.

Plain NumPy and exact: no sampling, no approximation, no framework state.

Rank@K (paper 3.1): "the percentage of ground-truth matchings appearing in the top-K ranked list".
Every query has one ground-truth candidate among C; candidates are ranked by their matching score
(P(match), higher = better). Ties count against the ground truth (the evaluation protocol):
its rank is 1 + the number of *other* candidates whose score is >= its own, so a model that scores
every candidate the same gets rank C, never rank 1.
"""

import numpy as np


def ground_truth_ranks(scores, ground_truth_index):
  """1-based rank of each query's ground truth among its candidates, ties counted against it.

  Args:
    scores: float array [Q, C], scores[q, c] = matching score of candidate c for query q (higher
      ranks first). NaN is refused (it has no order).
    ground_truth_index: int array [Q], the column of each query's ground truth, in [0, C).

  Returns:
    int64 array [Q]: rank = 1 + #{c != g : scores[q, c] >= scores[q, g]}, in [1, C].

  Raises:
    ValueError: bad shapes, out-of-range indices or NaN scores (the message says which query).
  """
  scores = np.asarray(scores, dtype=np.float64)
  ground_truth_index = np.asarray(ground_truth_index)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [Q, C], got shape {scores.shape}")
  num_queries, num_candidates = scores.shape
  if ground_truth_index.shape != (num_queries,):
    raise ValueError(f"ground_truth_index must be [Q]=[{num_queries}], got shape "
                     f"{ground_truth_index.shape}")
  if not np.issubdtype(ground_truth_index.dtype, np.integer):
    raise ValueError(f"ground_truth_index must be integers, got dtype {ground_truth_index.dtype}")
  bad = np.flatnonzero((ground_truth_index < 0) | (ground_truth_index >= num_candidates))
  if bad.size:
    raise ValueError(f"ground_truth_index of query {bad[0]} is {ground_truth_index[bad[0]]}, "
                     f"outside [0, {num_candidates})")
  nan_rows = np.flatnonzero(np.isnan(scores).any(axis=1))
  if nan_rows.size:
    raise ValueError(f"scores of query {nan_rows[0]} contain NaN ({nan_rows.size} queries do)")
  truth = scores[np.arange(num_queries), ground_truth_index]  # [Q]
  # ">=" counts the ground truth itself once; subtracting it leaves the other candidates.
  at_least_as_good = (scores >= truth[:, None]).sum(axis=1) - 1
  return (1 + at_least_as_good).astype(np.int64)


def rank_at_k(scores, ground_truth_index, ks=(1, 5, 10)):
  """Rank@K: the fraction of queries whose ground truth ranks within the top k, for each k.

  Args:
    scores: float array [Q, C] (see `ground_truth_ranks`).
    ground_truth_index: int array [Q].
    ks: iterable of positive ints.

  Returns:
    dict {k: float in [0, 1]} (fraction, not percent).
  """
  ranks = ground_truth_ranks(scores, ground_truth_index)
  results = {}
  for k in ks:
    k = int(k)
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    results[k] = float(np.mean(ranks <= k)) if ranks.size else float("nan")
  return results


def tia_accuracy(match_probability, labels, threshold=0.5):
  """Text-image alignment accuracy (paper 3.1): fraction of pairs classified correctly.

  A pair is predicted "match" when P(match) > threshold, i.e. class 1 wins the 2-way softmax
  (an exact 0.5 tie goes to "no match", matching argmax's first-index rule on equal logits).

  Args:
    match_probability: float array [N], P(match) of each pair.
    labels: int array [N], 1 = same product, 0 = not.
    threshold: decision threshold on P(match).

  Returns:
    float in [0, 1].
  """
  match_probability = np.asarray(match_probability, dtype=np.float64)
  labels = np.asarray(labels)
  if match_probability.ndim != 1 or labels.shape != match_probability.shape:
    raise ValueError(f"match_probability [N] and labels [N] must have the same shape, got "
                     f"{match_probability.shape} and {labels.shape}")
  if match_probability.size == 0:
    raise ValueError("tia_accuracy needs at least one pair")
  if np.isnan(match_probability).any():
    first = np.flatnonzero(np.isnan(match_probability))[0]
    raise ValueError(f"match_probability holds NaN at pair {first}")
  if not np.isin(labels, (0, 1)).all():
    others = sorted(set(labels.tolist()) - {0, 1})[:5]
    raise ValueError(f"labels must be 0 or 1, got values {others}")
  predicted = (match_probability > threshold).astype(labels.dtype)
  return float(np.mean(predicted == labels))


def roc_auc(labels, scores):
  """Area under the ROC curve (paper 3.4, Table 4: click prediction AUC), exact, ties averaged.

  The Mann-Whitney statistic from ranks: AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg),
  R_pos the sum of the positives' 1-based ranks among all scores, tied scores sharing the mean of
  their ranks; equivalently P(score of a random positive > a random negative) + 0.5 P(equal).

  Args:
    labels: array [N] of 0 / 1 (or bool): 1 = clicked.
    scores: float array [N], higher = more likely clicked. NaN is refused.

  Raises:
    ValueError: shapes differ, labels not 0/1, NaN scores, or only one class present.
  """
  labels = np.asarray(labels).reshape(-1)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  if labels.shape != scores.shape:
    raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
  if not np.isin(labels, (0, 1)).all():
    raise ValueError("labels must be 0 or 1")
  if np.isnan(scores).any():
    raise ValueError(f"{int(np.isnan(scores).sum())} NaN scores")
  positives = int(labels.sum())
  negatives = labels.size - positives
  if positives == 0 or negatives == 0:
    raise ValueError(f"AUC needs both classes: {positives} positives, {negatives} negatives")
  # Each distinct score's elements share the mean of the 1-based ranks they occupy.
  _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
  ends = np.cumsum(counts)
  mean_ranks = (ends - counts + 1 + ends) / 2.0
  ranks = mean_ranks[inverse.reshape(-1)]
  positive_rank_sum = ranks[labels.astype(bool)].sum()
  return float((positive_rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def click_accuracy(click_probability, labels, threshold=0.5):
  """Fraction of impressions whose P(click) > threshold agrees with clicked (1) / not (0)."""
  predicted = np.asarray(click_probability, np.float64).reshape(-1) > threshold
  labels = np.asarray(labels).reshape(-1).astype(bool)
  if predicted.shape != labels.shape:
    raise ValueError(f"click probabilities {predicted.shape} and labels {labels.shape} differ")
  return float(np.mean(predicted == labels)) if labels.size else float("nan")
