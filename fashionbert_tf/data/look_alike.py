"""Look-alike products: each product's nearest neighbours by its mean patch feature.

`data.negative_sampling = "look_alike"` draws part of the TIA negatives from these
(data/pairing.py). Not in the paper, which pairs an image with a randomly selected other product's
text (2.2). Why it exists: random negatives differ from the positive in many attributes at once, so
the matcher is done once it reads the most salient one. An ImageNet CNN's patch features make the
garment's shape salient and its colour faint; the toy demo then aligned the garment (probe 0.92)
and the sleeve (0.99) but left colour at chance (docs/experiments/paper_recipe_demo.md). A product
that looks alike to the backbone has the same kind of garment and differs in what the features show
least, so its text is a negative the matcher can only reject by reading that. On the toy data that
is colour in half of them; the matcher still learned it slowly (colour probe 0.64 after 900 such
steps, next to x16 colour histograms), so the demo does not use them
(docs/experiments/paper_recipe_demo.md).

The image embedding of a product: its patch features [64, D] averaged over the 64 patches and
over all its records (poses), each dimension then standardized over the products (so that a few
dimensions of large values, such as a scaled colour histogram, do not decide alone); neighbours
are the K other products of highest cosine similarity (ties by lower row). It needs the
precomputed patch features (`model.use_precomputed_features`), which are fixed (the backbone is
frozen), so the neighbours stay the same for a whole run. A product among many others'
neighbours is drawn more often in look-alike negatives than in positives, so for these draws
P(match | text) is 1/2 only on average (data/pairing.py).
"""

import time

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import records

_SCAN_SPEC = {"product_id": tf.io.FixedLenFeature([], tf.int64),
              contract.FEATURES_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}


def mean_product_features(file_pattern, product_ids):
  """float64 [N, D] each product's patch features averaged over its patches and records.

  Args:
    file_pattern: the split's precomputed-feature TFRecords (records with `patch_features`).
    product_ids: int [N] the products, in the order of the rows returned.

  Raises:
    RecordFileError: a record without patch features (image records: the look-alike negatives
      need `model.use_precomputed_features`), a product of `product_ids` without records, a
      record of a product not in `product_ids`, or a non-finite feature (naming file:record).
  """
  product_ids = np.asarray(product_ids, np.int64)
  row_of = {int(p): i for i, p in enumerate(product_ids)}
  sums, counts = None, np.zeros(len(product_ids), np.int64)
  for path, first, batch in records.iterate_parsed_batches(file_pattern, _SCAN_SPEC,
                                                           batch_size=256):
    for i, (product_id, serialized) in enumerate(zip(batch["product_id"],
                                                     batch[contract.FEATURES_KEY])):
      where = f"{path}:{first + i}"
      if not serialized:
        raise records.RecordFileError(
            f"{where}: no patch_features; data.negative_sampling=look_alike needs the "
            "precomputed patch-feature records (model.use_precomputed_features=true)")
      row = row_of.get(int(product_id))
      if row is None:
        raise records.RecordFileError(f"{where}: product {int(product_id)} is not among the "
                                      "products of the negatives index")
      features = records.parse_patch_features(tf.constant(serialized)).numpy()
      mean = features.astype(np.float64).mean(axis=0)
      if not np.all(np.isfinite(mean)):
        raise records.RecordFileError(f"{where}: non-finite patch features (NaN or Inf)")
      if sums is None:
        sums = np.zeros((len(product_ids), mean.shape[0]), np.float64)
      sums[row] += mean
      counts[row] += 1
  missing = np.flatnonzero(counts == 0)
  if len(missing):
    raise records.RecordFileError(
        f"{file_pattern}: no records for {len(missing)} product(s) of the negatives index, e.g. "
        f"product {int(product_ids[missing[0]])}")
  return sums / counts[:, None]


def nearest_neighbours(embeddings, k):
  """int64 [N, min(k, N - 1)] rows of each row's most cosine-similar other rows, best first.

  Args:
    embeddings: float [N, D], N >= 2. A zero row is similar to nothing (similarity 0).
    k: >= 1 neighbours wanted.
  """
  embeddings = np.asarray(embeddings, np.float64)
  if embeddings.ndim != 2 or len(embeddings) < 2:
    raise ValueError(f"look-alike neighbours need [N >= 2, D] embeddings, got "
                     f"{embeddings.shape}")
  if k < 1:
    raise ValueError(f"data.look_alike_neighbours = {k}; expected >= 1")
  k = min(int(k), len(embeddings) - 1)
  norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
  unit = embeddings / np.maximum(norms, 1e-12)
  neighbours = np.empty((len(unit), k), np.int64)
  for start in range(0, len(unit), 1024):      # [1024, N] similarities at a time
    similarity = unit[start:start + 1024] @ unit.T
    rows = np.arange(start, start + len(similarity))
    similarity[rows - start, rows] = -np.inf    # never the product itself
    # Stable sort on -similarity: equal similarities keep the lower row first.
    neighbours[rows] = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
  return neighbours


def standardize_columns(embeddings):
  """float64 [N, D] each column minus its mean over the rows, over its standard deviation
  (a constant column becomes 0)."""
  embeddings = np.asarray(embeddings, np.float64)
  deviation = embeddings.std(axis=0)
  return (embeddings - embeddings.mean(axis=0)) / np.where(deviation > 0, deviation, 1.0)


def look_alike_products(file_pattern, product_ids, k):
  """int64 [N, min(k, N - 1)]: for each of `product_ids`, the rows (into `product_ids`) of its K
  look-alike products (module docstring), most alike first."""
  start = time.time()
  neighbours = nearest_neighbours(
      standardize_columns(mean_product_features(file_pattern, product_ids)), k)
  logging.info("look-alike products for %s: %d products, %d neighbours each (%.1f s)",
               file_pattern, len(product_ids), neighbours.shape[1], time.time() - start)
  return neighbours
