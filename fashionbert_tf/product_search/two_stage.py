"""Two-stage retrieval (paper 3.4, Figure 5): nearest-neighbour recall, then FashionBERT re-ranks.

  stage 1, recall   query text -> query vector (`vectorizers.py`) -> the `recall_k` nearest
                    product vectors in a ScaNN index (`ann_index.py`), built offline once over the
                    catalogue;
  stage 2, re-rank  the fine-tuned <query, title, image> model scores P(click) of each of those
                    `recall_k` products (cross-attention over query, title and image patches,
                    Figure 6) and the list is sorted by it.

A re-ranker is any callable `(queries [N] str, titles [N] str, product_ids int64 [N]) -> float32
[N]` P(click) (`search.scoring.ClickScorer.score` for the fine-tuned model); None keeps the recall
order. Ties in P(click) keep the recall order (a stable sort).
"""

import dataclasses
import time
from typing import List

import numpy as np

from fashionbert_tf.product_search import ann_index
from fashionbert_tf.product_search import ranking_metrics


@dataclasses.dataclass
class SearchResult:
  """One query's final list, best first (all arrays [n])."""
  query: str
  product_ids: np.ndarray     # int64
  titles: List[str]
  recall_scores: np.ndarray   # float32: the index's dot product (cosine for unit vectors)
  click_probability: np.ndarray  # float32 P(click) from the re-ranker; NaN without one


class TwoStageSearch:
  """The catalogue's index plus the query tower and the re-ranker (module docstring)."""

  def __init__(self, product_ids, titles, product_vectors, query_vectorizer, index_config=None,
               reranker=None, recall_k=50):
    """Args:
      product_ids: int [N] catalogue product ids (unique).
      titles: [N] their titles (shown, and read by the re-ranker).
      product_vectors: float32 [N, d] from the same vectorizer as the queries.
      query_vectorizer: has `query_vectors([Q] str) -> float32 [Q, d]`.
      index_config: `ann_index.IndexConfig` (default approximate).
      reranker: callable (queries, titles, product_ids) -> P(click) [n], or None.
      recall_k: products the recall stage hands to the re-ranker (at most N).
    """
    self.product_ids = np.asarray(product_ids, np.int64)
    if len(set(self.product_ids.tolist())) != self.product_ids.size:
      raise ValueError("catalogue product ids must be unique")
    self.titles = list(titles)
    if len(self.titles) != self.product_ids.size or len(product_vectors) != self.product_ids.size:
      raise ValueError(f"{self.product_ids.size} product ids, {len(self.titles)} titles and "
                       f"{len(product_vectors)} product vectors: they must match")
    self.query_vectorizer = query_vectorizer
    self.reranker = reranker
    self.recall_k = min(int(recall_k), self.product_ids.size)
    if self.recall_k < 1:
      raise ValueError(f"recall_k must be >= 1, got {recall_k}")
    self.index_vectors = np.asarray(product_vectors, np.float32)
    started = time.perf_counter()
    self.index = ann_index.NearestNeighbourIndex(product_vectors, index_config,
                                                 max_k=self.recall_k)
    self.index_build_seconds = time.perf_counter() - started

  def ids_of_rows(self, rows):
    """Index rows int [Q, k] -> product ids int64 [Q, k]; row -1 (not found) stays -1."""
    return np.where(rows >= 0, self.product_ids[np.maximum(rows, 0)], -1)

  def recall(self, queries, k=None):
    """Stage 1: (product ids int64 [Q, k], scores float32 [Q, k]), best first; a slot the
    approximate index could not fill is id -1, score -inf (`ann_index`)."""
    k = self.recall_k if k is None else int(k)
    rows, scores = self.index.search(self.query_vectorizer.query_vectors(list(queries)), k)
    return self.ids_of_rows(rows), scores

  def rerank(self, queries, recalled_ids, recall_scores):
    """Stage 2: each query's recalled products sorted by the re-ranker's P(click) (stable).

    Returns:
      (product ids int64 [Q, k], recall scores [Q, k], P(click) float32 [Q, k]) reordered.
    """
    num_queries, k = recalled_ids.shape
    probability = np.full([num_queries, k], np.nan, np.float32)
    if self.reranker is None:
      return recalled_ids, recall_scores, probability
    title_of = dict(zip(self.product_ids.tolist(), self.titles))
    found = recalled_ids >= 0                                    # [Q, k]
    flat_ids = recalled_ids[found]
    flat_queries = [queries[q] for q in np.nonzero(found)[0].tolist()]
    probability[found] = np.asarray(
        self.reranker(flat_queries, [title_of[i] for i in flat_ids.tolist()], flat_ids),
        np.float32)
    # NaN (slots without a product) sorts last.
    order = np.argsort(-probability, axis=1, kind="stable")
    return (np.take_along_axis(recalled_ids, order, axis=1),
            np.take_along_axis(recall_scores, order, axis=1),
            np.take_along_axis(probability, order, axis=1))

  def search(self, queries, top_n=10):
    """Both stages: one `SearchResult` per query with its `top_n` products."""
    queries = list(queries)
    recalled_ids, recall_scores = self.recall(queries)
    ids, scores, probability = self.rerank(queries, recalled_ids, recall_scores)
    title_of = dict(zip(self.product_ids.tolist(), self.titles))
    results = []
    for q, query in enumerate(queries):
      keep = np.flatnonzero(ids[q] >= 0)[:top_n]
      results.append(SearchResult(
          query=query, product_ids=ids[q, keep], titles=[title_of[i] for i in ids[q, keep].tolist()],
          recall_scores=scores[q, keep], click_probability=probability[q, keep]))
    return results


def _found(ids):
  """[Q, k] ids -> Q lists without the -1 slots."""
  return [[i for i in row if i >= 0] for row in ids.tolist()]


def evaluate(search, queries, relevant, recall_ks=(10, 50), ndcg_k=10):
  """Recall@k of stage 1, NDCG@k before and after re-ranking, and queries per second.

  Args:
    search: a `TwoStageSearch`.
    queries: [Q] distinct query strings, each with at least one relevant product.
    relevant: [Q] sets of relevant product ids, or dicts product id -> gain.
    recall_ks: the k of Recall@k (each at most `search.recall_k`).
    ndcg_k: the k of NDCG@k.

  Returns:
    dict: recall@k, capped_recall@k, mean_relevant_per_query, ndcg@k_recall_order,
    ndcg@k_reranked (with a re-ranker), exact_overlap@recall_k (share of the exact top recall_k
    the index returns, ties counted as found: `ann_index.neighbour_recall`; 1.0 for an exact
    index), queries_per_second_recall
    (vectorize + search), queries_per_second_two_stage (+ re-ranking), num_queries.
  """
  return evaluate_relevances(search, queries, {"": relevant}, recall_ks, ndcg_k)[""]


def evaluate_relevances(search, queries, relevances, recall_ks=(10, 50), ndcg_k=10):
  """`evaluate` for several relevance definitions over one timed run of both stages.

  Args:
    search: a `TwoStageSearch`.
    queries: [Q] distinct query strings (all are searched and timed).
    relevances: {name: [Q] relevance sets / dicts}; a query whose entry is empty (no relevant
      product under that definition) is left out of that definition's metrics.
    recall_ks, ndcg_k: as in `evaluate`.

  Returns:
    {name: the dict `evaluate` describes}; the timing entries are the same in each.
  """
  queries = list(queries)
  if not queries:
    raise ValueError("no queries")
  for name, relevant in relevances.items():
    if len(relevant) != len(queries):
      raise ValueError(f"{len(queries)} queries but {len(relevant)} relevance sets ({name!r})")
  if max(recall_ks) > search.recall_k:
    raise ValueError(f"Recall@{max(recall_ks)} needs recall_k >= {max(recall_ks)}, "
                     f"the search hands on {search.recall_k}")
  # Warm-up (tf.function tracing, first-call allocations) outside the timed runs.
  warm_ids, warm_scores = search.recall(queries[:1])
  search.rerank(queries[:1], warm_ids, warm_scores)
  started = time.perf_counter()
  query_vectors = search.query_vectorizer.query_vectors(queries)
  rows, scores = search.index.search(query_vectors, search.recall_k)
  recall_seconds = time.perf_counter() - started
  recalled_ids = search.ids_of_rows(rows)
  started = time.perf_counter()
  reranked_ids, _, _ = search.rerank(queries, recalled_ids, scores)
  rerank_seconds = time.perf_counter() - started
  shared = {
      "recall_k": search.recall_k,
      f"exact_overlap@{search.recall_k}": ann_index.neighbour_recall(
          search.index_vectors, query_vectors, rows, search.recall_k),
      "queries_timed": len(queries),
      "queries_per_second_recall": len(queries) / max(recall_seconds, 1e-9),
      "queries_per_second_two_stage": len(queries) / max(recall_seconds + rerank_seconds, 1e-9),
  }
  recalled, reranked = _found(recalled_ids), _found(reranked_ids)
  reports = {}
  for name, relevant in relevances.items():
    keep = [q for q, r in enumerate(relevant) if r]
    if not keep:
      raise ValueError(f"no query has a relevant product ({name!r})")
    wanted = [relevant[q] for q in keep]
    lists = [recalled[q] for q in keep]
    results = {"num_queries": len(keep)}
    for k in recall_ks:
      results[f"recall@{k}"] = ranking_metrics.mean_over_queries(
          ranking_metrics.recall_at_k, lists, wanted, k)
      results[f"capped_recall@{k}"] = ranking_metrics.mean_over_queries(
          ranking_metrics.capped_recall_at_k, lists, wanted, k)
    results["mean_relevant_per_query"] = float(np.mean([len(r) for r in wanted]))
    results[f"ndcg@{ndcg_k}_recall_order"] = ranking_metrics.mean_over_queries(
        ranking_metrics.ndcg_at_k, lists, wanted, ndcg_k)
    if search.reranker is not None:
      results[f"ndcg@{ndcg_k}_reranked"] = ranking_metrics.mean_over_queries(
          ranking_metrics.ndcg_at_k, [reranked[q] for q in keep], wanted, ndcg_k)
    results.update(shared)
    reports[name] = results
  return reports
