"""Metrics of the two-stage search: Recall@k of the recall stage, NDCG@k of the final ranking.

Plain NumPy over ranked lists of product ids; exact, no sampling. A query's relevant products are
given as a set (binary relevance) or a dict product id -> gain (graded relevance, e.g. click
counts); what counts as relevant on the toy logs is chosen by the caller (`two_stage.py`).

Recall@k = |top-k ∩ relevant| / |relevant|: the share of a query's relevant products the recall
stage hands to the re-ranker; a query without relevant products is refused (it has no recall).

Capped Recall@k (BEIR's R_cap@k, Thakur et al. 2021) = |top-k ∩ relevant| / min(k, |relevant|):
1.0 when the top k are all relevant even if a query has more than k relevant products (a query
"top" matches a quarter of the toy catalogue; its plain Recall@10 cannot exceed 10 / |relevant|).

NDCG@k (Järvelin & Kekäläinen 2002, the linear-gain form): DCG@k = sum_{i=1..k} gain(r_i) /
log2(i + 1) over the ranked list, divided by the DCG@k of the ideal order (relevant products by
gain, best first). A list shorter than k just has fewer terms.
"""

import math

import numpy as np


def _gains(relevant):
  if isinstance(relevant, dict):
    gains = {key: float(value) for key, value in relevant.items()}
  else:
    gains = {key: 1.0 for key in relevant}
  if any(value < 0 or not math.isfinite(value) for value in gains.values()):
    raise ValueError("relevance gains must be finite and >= 0")
  return gains


def _checked_ranking(ranked_ids, k):
  """(int k, list of the ranked ids); ValueError for k < 1 or a duplicate id."""
  k = int(k)
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  ranked = list(ranked_ids)
  if len(set(ranked)) != len(ranked):
    raise ValueError("ranked_ids holds duplicates")
  return k, ranked


def recall_at_k(ranked_ids, relevant, k):
  """Recall@k of one query: float in [0, 1].

  Args:
    ranked_ids: sequence of product ids, best first (duplicates are an error).
    relevant: set of relevant ids, or dict id -> gain (ids with gain 0 are not relevant).
    k: positive int.
  """
  k, ranked = _checked_ranking(ranked_ids, k)
  wanted = {key for key, gain in _gains(relevant).items() if gain > 0}
  if not wanted:
    raise ValueError("a query without relevant products has no recall")
  return len(wanted.intersection(ranked[:k])) / len(wanted)


def capped_recall_at_k(ranked_ids, relevant, k):
  """Capped Recall@k of one query: |top-k ∩ relevant| / min(k, |relevant|), in [0, 1]."""
  wanted = {key for key, gain in _gains(relevant).items() if gain > 0}
  return recall_at_k(ranked_ids, relevant, k) * len(wanted) / min(int(k), max(len(wanted), 1))


def dcg_at_k(gains_in_rank_order, k):
  """sum_{i=1..min(k, n)} g_i / log2(i + 1)."""
  gains = np.asarray(gains_in_rank_order, np.float64)[:int(k)]
  return float(np.sum(gains / np.log2(np.arange(2, gains.size + 2))))


def ndcg_at_k(ranked_ids, relevant, k=10):
  """NDCG@k of one query: float in [0, 1] (0 when nothing relevant is ranked in the top k).

  Args:
    ranked_ids: sequence of product ids, best first (duplicates are an error).
    relevant: set of relevant ids (gain 1) or dict id -> gain >= 0.
    k: positive int.

  Raises:
    ValueError: no relevant product (the ideal DCG is 0), duplicates, k < 1.
  """
  k, ranked = _checked_ranking(ranked_ids, k)
  gains = _gains(relevant)
  ideal = dcg_at_k(sorted(gains.values(), reverse=True), k)
  if ideal <= 0:
    raise ValueError("a query without relevant products has no NDCG")
  return dcg_at_k([gains.get(key, 0.0) for key in ranked], k) / ideal


def mean_over_queries(metric, ranked_lists, relevant_sets, k):
  """Mean of `metric(ranked, relevant, k)` over queries (lists of equal length, at least one)."""
  if len(ranked_lists) != len(relevant_sets):
    raise ValueError(f"{len(ranked_lists)} ranked lists but {len(relevant_sets)} relevance sets")
  if not ranked_lists:
    raise ValueError("no queries")
  return float(np.mean([metric(ranked, relevant, k)
                        for ranked, relevant in zip(ranked_lists, relevant_sets)]))
