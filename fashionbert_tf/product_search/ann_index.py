"""The recall stage's nearest-neighbour index (paper 3.4, Figure 5: "retrieval ... with
nearest-neighbor search"), built on ScaNN.

Why ScaNN (not faiss): ScaNN 1.4.x ships Linux wheels built against TensorFlow 2.20 and numpy 2.x
(its `tf` extra pins `tensorflow~=2.20.0`), so it installs beside this project's TensorFlow without
changing it, and it is the nearest-neighbour library of the TensorFlow ecosystem (TF Recommenders
uses it). It is an optional dependency (`pip install -e ".[search]"`, also in the `test` extra);
`require_scann` names the install command when it is missing.

Two modes over the same vectors (float32 [N, d]; similarity = dot product, so L2-normalized
vectors give cosine similarity):
  "exact"        ScaNN's brute-force scorer (float32): every product is scored; the reference.
  "approximate"  ScaNN's partitioning tree (k-means leaves, `num_leaves_to_search` of them per
                 query; by default a quarter, or enough leaves to hold ~4k products) + asymmetric hashing (anisotropic quantization, 2 dims per 4-bit block)
                 + exact re-scoring of the best `reorder_num_neighbours` candidates: the setting
                 ScaNN's README recommends, scaled down for small catalogues.
Scores returned are dot products (higher = nearer), sorted best first. In approximate mode a
query whose searched leaves hold fewer than k products gets fewer than k: the missing slots at the
end of its row are row -1 with score -inf (counted in the log).
"""

import dataclasses
import math

from absl import logging
import numpy as np

MODES = ("exact", "approximate")
# Asymmetric hashing trains 16 centres (4 bits) per block: fewer vectors cannot train it.
MIN_APPROXIMATE_VECTORS = 16


def require_scann():
  """The `scann_ops_pybind` module; ImportError naming the install command when ScaNN is absent."""
  try:
    from scann.scann_ops.py import scann_ops_pybind  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(
        "the two-stage search needs ScaNN: pip install -e \".[search]\" (scann~=1.4.2, Linux "
        f"x86_64 / aarch64 wheels); import failed: {error}") from error
  return scann_ops_pybind


@dataclasses.dataclass
class IndexConfig:
  """Settings of `NearestNeighbourIndex` (module docstring)."""
  mode: str = "approximate"
  # Tree leaves; 0 = about sqrt(N) (ScaNN's rule of thumb), at least 1 and at most N.
  num_leaves: int = 0
  # Leaves scored per query; 0 = a quarter of the leaves, or more so that about 4 * max_k
  # products are scored (at least 1, at most all).
  num_leaves_to_search: int = 0
  # Candidates re-scored exactly after asymmetric hashing; 0 = max(4 * k, 100).
  reorder_num_neighbours: int = 0
  anisotropic_quantization_threshold: float = 0.2
  dimensions_per_block: int = 2
  training_sample_size: int = 100000
  # Spherical k-means leaves: right for L2-normalized vectors (every vectorizer here normalizes).
  spherical: bool = True

  def validate(self):
    if self.mode not in MODES:
      raise ValueError(f"index mode must be one of {MODES}, got {self.mode!r}")
    for name in ("num_leaves", "num_leaves_to_search", "reorder_num_neighbours"):
      if getattr(self, name) < 0:
        raise ValueError(f"index {name} must be >= 0, got {getattr(self, name)}")


def exact_neighbours(database, queries, k):
  """Brute-force top-k by dot product in NumPy: (indices int64 [Q, k], scores float32 [Q, k]).

  Ties are broken by the lower index. The reference the ScaNN index is tested against.
  """
  database = np.asarray(database, np.float32)
  queries = np.asarray(queries, np.float32)
  scores = queries @ database.T  # [Q, N]
  k = min(int(k), database.shape[0])
  order = np.lexsort((np.broadcast_to(np.arange(database.shape[0]), scores.shape), -scores),
                     axis=-1)[:, :k]
  return order.astype(np.int64), np.take_along_axis(scores, order, axis=1)


def neighbour_recall(database, queries, rows, k):
  """Share of the exact top-k the index found, ties counted as found: a returned row counts when
  its true dot product reaches the k-th best exact score (minus 1e-5 for float round-off), so an
  index that returns another of several equally near products is not penalized. Missing slots
  (row -1) count as misses. float in [0, 1], the mean over queries."""
  database = np.asarray(database, np.float32)
  queries = np.asarray(queries, np.float32)
  rows = np.asarray(rows)[:, :k]
  _, exact_scores = exact_neighbours(database, queries, k)
  threshold = exact_scores[:, -1:] - 1e-5                                  # [Q, 1]
  true_scores = np.einsum("qd,qkd->qk", queries, database[np.maximum(rows, 0)])
  hits = (true_scores >= threshold) & (rows >= 0)
  return float(np.mean(hits.sum(axis=1) / k))


class NearestNeighbourIndex:
  """Top-k maximum-inner-product search over a fixed set of vectors with ScaNN.

  `search(queries float32 [Q, d], k) -> (row indices int64 [Q, k], scores float32 [Q, k])`, rows
  of the `vectors` the index was built from, best first. k is at most N.
  """

  def __init__(self, vectors, config=None, max_k=100):
    """Args:
      vectors: float32 [N, d], N >= 1, finite.
      config: `IndexConfig` (default: approximate).
      max_k: the largest k `search` will be asked for (sizes the default re-scoring pool).
    """
    config = config or IndexConfig()
    config.validate()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
      raise ValueError(f"index vectors must be [N, d] with N, d >= 1, got shape {vectors.shape}")
    if not np.all(np.isfinite(vectors)):
      row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
      raise ValueError(f"index vectors: row {row} holds NaN or Inf")
    self.config = config
    self.num_vectors, self.dim = vectors.shape
    self.max_k = min(int(max_k), self.num_vectors)
    scann = require_scann()
    builder = scann.builder(vectors, self.max_k, "dot_product")
    if config.mode == "exact":
      builder = builder.score_brute_force()
      self.num_leaves = 0
    else:
      if self.num_vectors < MIN_APPROXIMATE_VECTORS:
        raise ValueError(
            f"an approximate index needs at least {MIN_APPROXIMATE_VECTORS} vectors (asymmetric "
            f"hashing trains 16 centres), got {self.num_vectors}; use mode 'exact'")
      num_leaves = config.num_leaves or int(round(math.sqrt(self.num_vectors)))
      self.num_leaves = max(1, min(num_leaves, self.num_vectors))
      # Default: a quarter of the leaves, and at least enough that the searched leaves hold about
      # 4 * max_k products on average (a small catalogue asked for many neighbours).
      to_search = config.num_leaves_to_search or max(
          1, self.num_leaves // 4,
          math.ceil(4 * self.max_k * self.num_leaves / self.num_vectors))
      self.num_leaves_to_search = min(to_search, self.num_leaves)
      reorder = config.reorder_num_neighbours or max(4 * self.max_k, 100)
      builder = builder.tree(
          num_leaves=self.num_leaves, num_leaves_to_search=self.num_leaves_to_search,
          training_sample_size=min(self.num_vectors, config.training_sample_size),
          # ScaNN's default (50) would merge the leaves of a small catalogue away.
          min_partition_size=max(1, self.num_vectors // (4 * self.num_leaves)),
          spherical=config.spherical, random_init=False)
      # Asymmetric hashing needs at least one full block of dimensions.
      builder = builder.score_ah(
          min(config.dimensions_per_block, self.dim),
          anisotropic_quantization_threshold=config.anisotropic_quantization_threshold)
      builder = builder.reorder(min(reorder, self.num_vectors))
    self._searcher = builder.build()

  def search(self, queries, k):
    """(indices int64 [Q, k], scores float32 [Q, k]) of each query's k best rows, best first
    (missing slots: -1 / -inf, see the module docstring)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != self.dim:
      raise ValueError(f"queries must be [Q, {self.dim}], got shape {queries.shape}")
    k = int(k)
    if not 1 <= k <= self.max_k:
      raise ValueError(f"k must be in [1, {self.max_k}] for this index, got {k}")
    if queries.shape[0] == 0:
      return np.zeros([0, k], np.int64), np.zeros([0, k], np.float32)
    indices, scores = self._searcher.search_batched(queries, final_num_neighbors=k)
    indices, scores = np.array(indices, np.int64), np.array(scores, np.float32)
    # The approximate index finds fewer than k when the leaves it searches hold fewer products:
    # ScaNN pads with row 0 and a NaN score. Those slots become row -1, score -inf.
    missing = ~np.isfinite(scores)
    if missing.any():
      indices[missing] = -1
      scores[missing] = -np.inf
      logging.log_first_n(
          logging.WARNING, "%d of %d queries got fewer than k=%d neighbours from the searched "
          "leaves (padded with row -1); search more leaves (num_leaves_to_search) for more", 5,
          int(missing.any(axis=1).sum()), queries.shape[0], k)
    return indices, scores
