"""Positive / negative text-image pairs for the TIA task (paper 2.2, "Text and Image Alignment").

Paper: a positive pairs an image with its own product's text; a negative pairs it with the text of
a different product. Which other products (`data.negative_sampling`):

  same_subcategory (default)  another product of the image's (category, subcategory): harder
                              negatives, this project's documented choice (the paper only says
                              "other products"). When the group has no other product, any other
                              product (such products are counted and logged when the sampler is
                              built).
  random                      any other product (the paper's literal reading; the group is all
                              products).
  mixed                       from the own subcategory with probability
                              `data.mixed_same_subcategory_fraction`, else any other product.
  look_alike                  with probability `data.look_alike_fraction` one of the product's
                              `data.look_alike_neighbours` nearest products by mean patch feature
                              (data/look_alike.py: they differ in what the features show least,
                              e.g. colour for an ImageNet CNN), else any other product. Not in the
                              paper; needs the precomputed patch features.

How a negative is drawn: a uniformly random RECORD among the records of those other products (of
the K look-alikes for a look-alike draw), and that record's product's description; i.e. products
are weighted by their number of records (poses), not drawn uniformly. Why: Fashion-Gen has 1-6
images per product and every image gives a positive with its own text, so a text appears in
positives once per pose. With products drawn uniformly a text's share of negatives would not
depend on its pose count: P(match | text) ran from about 0.22 (1 pose) to 0.63 (6 poses) on the
toy data, a text-only model could beat chance and image-to-text ranking would favour many-pose
products. Drawn by record, in a group of G records a
product with n_j records gets, per epoch at ratio 1, n_j * (S - n_j / (G - n_j)) negatives in
expectation with S = sum_o n_o / (G - n_o) ~ 1, i.e. as many as its positives up to O(n_j / G):
P(match | text) ~ 1/2 whatever the pose count (exactly 1/2 is impossible in small groups, as a
negative may never be the own product). Evaluation's TIA negatives (evaluation/rank_at_k.py) are
drawn by the same rule.

Negatives are drawn with stateless ops seeded by (data.seed, chunk index), and the chunk index
keeps growing across epochs, so negatives are re-drawn every epoch and the whole stream is
reproducible.

Ratio (`data.negative_ratio` = r, default 1.0 = 1:1): each image gives one positive and
floor(r) + Bernoulli(frac(r)) negatives, so integer ratios are kept exactly (r = 1: every image
appears once with its own text and once with another product's).

The sampler holds one description per product (Fashion-Gen repeats a product's description on each
of its poses; the first record's is used) and each product's record count, in lookup tables built
once from the TFRecords.
"""

import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.configs import data as data_config_lib
from fashionbert_tf.data import look_alike
from fashionbert_tf.data import negatives_index
from fashionbert_tf.data import records

_SAMPLER_CACHE = {}


class NegativeSampler:
  """Draws negative descriptions: a random record of another product (module docstring).

  Products are kept ordered by (group, product id) with an exclusive prefix sum of their record
  counts, so a group's records are one contiguous range [cum[start], cum[start + count]) and a
  record index maps back to its product with a binary search.

  Args:
    product_ids: int [N] distinct product ids.
    descriptions: str [N] one description per product.
    groups: hashable [N] the (category, subcategory) of each product.
    record_counts: int [N] records (poses) per product, each >= 1; None = 1 each (products then
      weigh the same).
    negative_sampling: "same_subcategory" (negatives from the product's group when it has another
      product, else from any other product), "random" (groups ignored: any other product),
      "mixed" (each negative from the group with probability `same_group_fraction`, else from
      any other product) or "look_alike" (each negative from the product's `look_alikes` with
      probability `look_alike_fraction`, else from any other product).
    same_group_fraction: see "mixed"; ignored by the other modes.
    look_alikes: int [N, K] for "look_alike" (required then, ignored otherwise): row i holds the
      rows (into `product_ids`) of product i's K look-alike products, none of them i itself
      (`look_alike.look_alike_products`).
    look_alike_fraction: see "look_alike".
  """

  def __init__(self, product_ids, descriptions, groups, record_counts=None,
               negative_sampling="same_subcategory", same_group_fraction=0.5, look_alikes=None,
               look_alike_fraction=0.5):
    self.negative_sampling = data_config_lib.check_negative_sampling(negative_sampling)
    self.same_group_fraction = float(same_group_fraction)
    self.look_alike_fraction = float(look_alike_fraction)
    product_ids = np.asarray(product_ids, np.int64)
    if len(product_ids) < 2:
      raise ValueError(f"negative pairs need at least 2 products, got {len(product_ids)}")
    if len(set(product_ids.tolist())) != len(product_ids):
      raise ValueError("NegativeSampler: product_ids must be distinct")
    if len(descriptions) != len(product_ids) or len(groups) != len(product_ids):
      raise ValueError(f"NegativeSampler: {len(product_ids)} product_ids, {len(descriptions)} "
                       f"descriptions and {len(groups)} groups; expected one of each per product")
    record_counts = (np.ones(len(product_ids), np.int64) if record_counts is None
                     else np.asarray(record_counts, np.int64))
    if record_counts.shape != product_ids.shape or (record_counts < 1).any():
      raise ValueError("NegativeSampler: record_counts must be one integer >= 1 per product, got "
                       f"shape {record_counts.shape}, min {record_counts.min(initial=1)}")
    if negative_sampling in ("random", "look_alike"):
      groups = [("*", "*")] * len(product_ids)       # one group: all products
    group_keys = sorted(set(groups))
    group_index = {key: i for i, key in enumerate(group_keys)}
    group_of = np.array([group_index[g] for g in groups], np.int64)
    order = np.lexsort((product_ids, group_of))           # by group, then product id
    self.product_ids = product_ids[order]
    self.descriptions = [descriptions[i] for i in order]
    self.record_counts = record_counts[order]
    group_of = group_of[order]
    counts = np.bincount(group_of, minlength=len(group_keys))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    self.group_start = starts[group_of]
    self.group_count = counts[group_of]
    # cum[k] = records of the products before k (in this order); cum[N] = all records.
    self.record_offsets = np.concatenate([[0], np.cumsum(self.record_counts)]).astype(np.int64)
    self.num_products = len(self.product_ids)
    self.look_alikes = None
    if negative_sampling == "look_alike":
      self.look_alikes = _look_alikes_in_order(look_alikes, order)
      self._look_alikes = tf.constant(self.look_alikes, tf.int64)
      # Records of each product's look-alikes, accumulated along the row: [N, K], fixed.
      self._look_alike_record_cumsum = tf.constant(
          np.cumsum(self.record_counts[self.look_alikes], axis=1), tf.int64)
    self.num_records = int(self.record_offsets[-1])
    self.num_fallback_products = int(np.sum(self.group_count < 2))
    self.group_names = group_keys
    self._table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.product_ids), tf.range(self.num_products, dtype=tf.int64)), -1)
    self._descriptions = tf.constant(self.descriptions, tf.string)
    self._product_ids = tf.constant(self.product_ids, tf.int64)
    self._group_start = tf.constant(self.group_start, tf.int64)
    self._group_count = tf.constant(self.group_count, tf.int64)
    self._record_counts = tf.constant(self.record_counts, tf.int64)
    self._record_offsets = tf.constant(self.record_offsets, tf.int64)

  @classmethod
  def from_records(cls, file_pattern, negative_sampling="same_subcategory", skip_corrupt=False,
                   same_group_fraction=0.5, look_alike_neighbours=10, look_alike_fraction=0.5):
    """The sampler of the TFRecords of `file_pattern`, from their negatives index.

    The index (`negatives_index.py`: descriptions, groups, records per product) is read from next
    to the shards when it matches them, else rebuilt by one scan of the shards (errors name file
    + record) and written back. Cached in the process per pattern, mode and the files' (name,
    mtime, size). skip_corrupt: a corrupt shard counts up to its first unreadable record
    (`data.skip_corrupt_records`) instead of being an error.
    """
    data_config_lib.check_negative_sampling(negative_sampling)
    key = (str(file_pattern), negative_sampling, float(same_group_fraction),
           int(look_alike_neighbours), float(look_alike_fraction), bool(skip_corrupt)) + tuple(
        (path, os.path.getmtime(path), os.path.getsize(path))
        for path in records.list_record_files(file_pattern))
    if key not in _SAMPLER_CACHE:
      start = time.time()
      index, how = negatives_index.load_or_build(file_pattern, skip_corrupt)
      products = index["products"]
      if len(products) < 2:
        raise ValueError(f"{file_pattern}: {len(products)} product(s); negative pairs need at "
                         "least 2 products")
      look_alikes = None
      if negative_sampling == "look_alike":
        look_alikes = look_alike.look_alike_products(
            file_pattern, [p[0] for p in products], look_alike_neighbours)
      sampler = cls([p[0] for p in products], [p[1] for p in products],
                    [(p[2], p[3]) for p in products], record_counts=[p[4] for p in products],
                    negative_sampling=negative_sampling, same_group_fraction=same_group_fraction,
                    look_alikes=look_alikes, look_alike_fraction=look_alike_fraction)
      logging.info(
          "negative sampler for %s (%s, record-weighted; index %s in %.1f s): %d products, %d "
          "records, %d groups; %d products are alone in their group and get negatives from any "
          "other product", file_pattern, negative_sampling, how, time.time() - start,
          sampler.num_products, sampler.num_records, len(sampler.group_names),
          sampler.num_fallback_products)
      _SAMPLER_CACHE[key] = sampler
    return _SAMPLER_CACHE[key]

  def product_index(self, product_ids):
    """int64 [B] product ids -> int64 [B] row in the table; unknown ids are an error."""
    index = self._table.lookup(tf.cast(product_ids, tf.int64))
    check = tf.debugging.assert_non_negative(
        index, message="product_id not in the negative sampler's table (records of another "
        "split or dataset?)")
    with tf.control_dependencies([check]):
      return tf.identity(index)

  def sample(self, product_ids, seed, look_alike_fraction=None):
    """Negatives for a batch of product ids.

    Each is a uniformly random record of the other products of the own product's group (of all
    other products when the group has none; groups are all products with "random" and
    "look_alike"), or for a look-alike draw of the product's look-alikes, reported as its product.

    Args:
      product_ids: int64 [E].
      seed: int [2] stateless seed.
      look_alike_fraction: scalar in [0, 1], "look_alike" only: this draw's share of look-alikes
        (None: the sampler's `look_alike_fraction`).

    Returns:
      (descriptions string [E], negative product ids int64 [E]); never the own product; the same
      (category, subcategory) whenever that group has another product ("same_subcategory").
    """
    own = self.product_index(product_ids)                                   # [E]
    count = tf.gather(self._group_count, own)
    same_group = count >= 2
    if self.negative_sampling == "mixed":
      seed = tf.cast(seed, tf.int64)
      choice = tf.random.stateless_uniform(tf.shape(own), tf.stack([seed[0], seed[1] + 1]),
                                           dtype=tf.float64)
      same_group = tf.logical_and(same_group, choice < self.same_group_fraction)
    # Products [start, start + count) to draw from: the group, else all products (fallback).
    start = tf.where(same_group, tf.gather(self._group_start, own), tf.zeros_like(own))
    count = tf.where(same_group, count, tf.fill(tf.shape(own), tf.constant(
        self.num_products, tf.int64)))
    first_record = tf.gather(self._record_offsets, start)
    own_first = tf.gather(self._record_offsets, own)
    own_records = tf.gather(self._record_counts, own)
    # Records of the other products in the range; >= 1 since the range has another product.
    other_records = tf.gather(self._record_offsets, start + count) - first_record - own_records
    # float64: floor(u * R) reaches every record with equal probability (up to 2^-53 * R).
    uniform = tf.random.stateless_uniform(tf.shape(own), seed, dtype=tf.float64)
    offset = tf.cast(tf.floor(uniform * tf.cast(other_records, tf.float64)), tf.int64)
    offset = tf.clip_by_value(offset, 0, other_records - 1)   # u * R may round up to R
    record = first_record + offset
    record = tf.where(record >= own_first, record + own_records, record)   # skip own records
    chosen = tf.searchsorted(self._record_offsets, record, side="right", out_type=tf.int64) - 1
    if self.negative_sampling == "look_alike":
      seed = tf.cast(seed, tf.int64)
      choice = tf.random.stateless_uniform(tf.shape(own), tf.stack([seed[0], seed[1] + 1]),
                                           dtype=tf.float64)
      alike = self._sample_look_alike(own, tf.stack([seed[0], seed[1] + 2]))
      if look_alike_fraction is None:
        look_alike_fraction = self.look_alike_fraction
      chosen = tf.where(choice < tf.cast(look_alike_fraction, tf.float64), alike, chosen)
    return tf.gather(self._descriptions, chosen), tf.gather(self._product_ids, chosen)

  def _sample_look_alike(self, own, seed):
    """int64 [E] one of each row's look-alike products, drawn by record (as every negative)."""
    candidates = tf.gather(self._look_alikes, own)                        # [E, K]
    cumulative = tf.gather(self._look_alike_record_cumsum, own)           # [E, K]
    uniform = tf.random.stateless_uniform(tf.shape(own), seed, dtype=tf.float64)
    record = tf.cast(tf.floor(uniform * tf.cast(cumulative[:, -1], tf.float64)), tf.int64)
    record = tf.minimum(record, cumulative[:, -1] - 1)
    slot = tf.searchsorted(cumulative, record[:, None], side="right", out_type=tf.int64)[:, 0]
    return tf.gather(candidates, slot, batch_dims=1)


def _look_alikes_in_order(look_alikes, order):
  """The look-alike rows (into the given product order) re-indexed to the sampler's order."""
  if look_alikes is None:
    raise ValueError("negative_sampling='look_alike' needs look_alikes (int [N, K] rows)")
  look_alikes = np.asarray(look_alikes, np.int64)
  num_products = len(order)
  if (look_alikes.ndim != 2 or look_alikes.shape[0] != num_products or
      look_alikes.shape[1] < 1):
    raise ValueError(f"look_alikes: shape {look_alikes.shape}; expected [{num_products}, K >= 1]")
  if look_alikes.min() < 0 or look_alikes.max() >= num_products:
    raise ValueError(f"look_alikes: rows must be in [0, {num_products}), got "
                     f"[{look_alikes.min()}, {look_alikes.max()}]")
  if (look_alikes == np.arange(num_products)[:, None]).any():
    raise ValueError("look_alikes: a product is its own look-alike")
  position = np.empty(num_products, np.int64)
  position[order] = np.arange(num_products)      # given row -> row in the sampler's order
  return position[look_alikes[order]]


def pair_chunk(product_ids, descriptions, sampler, negative_ratio, seed, look_alike_fraction=None):
  """Expands a chunk of B image records into positive and negative text-image examples.

  Args:
    product_ids: int64 [B] the records' products.
    descriptions: string [B] their own descriptions.
    sampler: a `NegativeSampler`.
    negative_ratio: r >= 0 (module docstring).
    seed: int [2] stateless seed.
    look_alike_fraction: passed to `sampler.sample` (None: the sampler's).

  Returns:
    dict with image_index int32 [E] (which record's image), text string [E], tia_label int32 [E]
    (1 = own text), negative_product_id int64 [E] (-1 for positives). Per record: its positive
    first, then its negatives.
  """
  if negative_ratio < 0:
    raise ValueError(f"data.negative_ratio must be >= 0, got {negative_ratio}")
  seed = tf.cast(seed, tf.int64)
  count_seed = tf.random.experimental.stateless_fold_in(seed, 0)
  sample_seed = tf.random.experimental.stateless_fold_in(seed, 1)
  batch = tf.shape(product_ids)[0]
  whole = int(np.floor(negative_ratio))
  extra = tf.random.stateless_uniform([batch], count_seed) < (negative_ratio - whole)
  per_record = 1 + whole + tf.cast(extra, tf.int32)                       # [B]
  image_index = tf.repeat(tf.range(batch), per_record)                    # [E]
  first_of_record = tf.repeat(tf.cumsum(per_record, exclusive=True), per_record)
  is_positive = tf.equal(tf.range(tf.shape(image_index)[0]), first_of_record)
  own_products = tf.gather(product_ids, image_index)
  negative_text, negative_product = sampler.sample(own_products, sample_seed,
                                                   look_alike_fraction)
  return {
      "image_index": image_index,
      "text": tf.where(is_positive, tf.gather(descriptions, image_index), negative_text),
      "tia_label": tf.cast(is_positive, tf.int32),
      "negative_product_id": tf.where(is_positive, tf.constant(-1, tf.int64), negative_product),
  }
