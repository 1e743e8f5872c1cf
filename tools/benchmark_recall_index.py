"""Queries per second and exact-neighbour overlap of the recall stage's ScaNN index.

  python tools/benchmark_recall_index.py --num_products 100000 --dim 384 --k 50

Clustered unit vectors (a stand-in for an encoder's product vectors: the toy catalogue has only
300 products, too few for an index to matter), queries drawn the same way; the approximate index
(tree + asymmetric hashing + exact reorder, product_search/ann_index.py defaults unless given)
against ScaNN's exact brute force and NumPy. Prints the settings and one line per index.
"""

import time

from absl import app
from absl import flags
import numpy as np

from fashionbert_tf.product_search import ann_index

NUM_PRODUCTS = flags.DEFINE_integer("num_products", 100000, "Index size N.")
DIM = flags.DEFINE_integer("dim", 384, "Vector size (384 = MiniLM's hidden size).")
NUM_QUERIES = flags.DEFINE_integer("num_queries", 1000, "Queries per timed run.")
K = flags.DEFINE_integer("k", 50, "Neighbours per query (the recall stage's recall_k).")
NUM_CLUSTERS = flags.DEFINE_integer("num_clusters", 200, "Centres of the clustered vectors.")
NUM_LEAVES = flags.DEFINE_integer("num_leaves", 0, "0 = the index default (sqrt(N)).")
LEAVES_TO_SEARCH = flags.DEFINE_integer("num_leaves_to_search", 0, "0 = the index default.")
SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


def clustered(rng, count, centres, noise=0.35):
  vectors = centres[rng.integers(0, len(centres), count)] + noise * rng.normal(
      size=(count, centres.shape[1]))
  return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def main(argv):
  del argv
  rng = np.random.default_rng(SEED.value)
  centres = rng.normal(size=(NUM_CLUSTERS.value, DIM.value))
  products = clustered(rng, NUM_PRODUCTS.value, centres)
  queries = clustered(rng, NUM_QUERIES.value, centres)
  k = K.value
  print(f"N={NUM_PRODUCTS.value} d={DIM.value} queries={NUM_QUERIES.value} k={k} "
        f"clusters={NUM_CLUSTERS.value}")
  started = time.perf_counter()
  ann_index.exact_neighbours(products, queries, k)
  numpy_seconds = time.perf_counter() - started
  print(f"numpy brute force: {NUM_QUERIES.value / numpy_seconds:10.0f} queries/s")
  for mode in ("exact", "approximate"):
    config = ann_index.IndexConfig(mode=mode, num_leaves=NUM_LEAVES.value,
                                   num_leaves_to_search=LEAVES_TO_SEARCH.value)
    started = time.perf_counter()
    index = ann_index.NearestNeighbourIndex(products, config, max_k=k)
    build = time.perf_counter() - started
    index.search(queries[:10], k)   # warm-up
    started = time.perf_counter()
    rows, _ = index.search(queries, k)
    seconds = time.perf_counter() - started
    leaves = (f" leaves {index.num_leaves}, searched {index.num_leaves_to_search}"
              if mode == "approximate" else "")
    print(f"scann {mode:<11}: {NUM_QUERIES.value / seconds:10.0f} queries/s, build "
          f"{build:6.1f} s, overlap with exact top-{k} {ann_index.neighbour_recall(products, queries, rows, k):.3f}{leaves}")


if __name__ == "__main__":
  app.run(main)
