"""Positive / negative text-image pairs for the TIA task (paper 2.2, "Text and Image Alignment").

Paper: a positive pairs an image with its own product's text; a negative pairs it with the text of
a different product. This project draws the negative text from a random other product of the SAME
subcategory (harder negatives, the issue's choice), uniformly over products; when the image's
(category, subcategory) has no other product, from any other product (such products are counted
and logged when the sampler is built). Negatives are drawn with stateless ops seeded by
(data.seed, chunk index), and the chunk index keeps growing across epochs, so negatives are
re-drawn every epoch and the whole stream is reproducible.

Ratio (`data.negative_ratio` = r, default 1.0 = 1:1): each image gives one positive and
floor(r) + Bernoulli(frac(r)) negatives, so integer ratios are kept exactly (r = 1: every image
appears once with its own text and once with another product's).

The sampler holds one description per product (Fashion-Gen repeats a product's description on each
of its poses; the first record's is used) in a lookup table built once from the TFRecords.
"""

import collections
import os

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import records

_SAMPLER_CACHE = {}


class NegativeSampler:
  """Draws negative descriptions: another product, same (category, subcategory) when possible.

  Args:
    product_ids: int [N] distinct product ids.
    descriptions: str [N] one description per product.
    groups: hashable [N] the (category, subcategory) of each product.
  """

  def __init__(self, product_ids, descriptions, groups):
    product_ids = np.asarray(product_ids, np.int64)
    if len(product_ids) < 2:
      raise ValueError(f"negative pairs need at least 2 products, got {len(product_ids)}")
    if len(set(product_ids.tolist())) != len(product_ids):
      raise ValueError("NegativeSampler: product_ids must be distinct")
    group_keys = sorted(set(groups))
    group_index = {key: i for i, key in enumerate(group_keys)}
    group_of = np.array([group_index[g] for g in groups], np.int64)
    order = np.lexsort((product_ids, group_of))           # by group, then product id
    self.product_ids = product_ids[order]
    self.descriptions = [descriptions[i] for i in order]
    group_of = group_of[order]
    counts = np.bincount(group_of, minlength=len(group_keys))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    self.group_start = starts[group_of]
    self.group_count = counts[group_of]
    self.num_products = len(self.product_ids)
    self.num_fallback_products = int(np.sum(self.group_count < 2))
    self.group_names = group_keys
    self._table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.product_ids), tf.range(self.num_products, dtype=tf.int64)), -1)
    self._descriptions = tf.constant(self.descriptions, tf.string)
    self._product_ids = tf.constant(self.product_ids, tf.int64)
    self._group_start = tf.constant(self.group_start, tf.int64)
    self._group_count = tf.constant(self.group_count, tf.int64)

  @classmethod
  def from_records(cls, file_pattern):
    """Scans the TFRecords of `file_pattern` once; errors name file + record.

    Cached per pattern and per the files' (name, mtime, size), so rewritten shards are re-read.
    """
    key = (str(file_pattern),) + tuple(
        (path, os.path.getmtime(path), os.path.getsize(path))
        for path in records.list_record_files(file_pattern))
    if key not in _SAMPLER_CACHE:
      first = collections.OrderedDict()
      for _, _, batch in records.iterate_parsed_batches(file_pattern):
        for i, product_id in enumerate(batch["product_id"]):
          product_id = int(product_id)
          if product_id not in first:
            first[product_id] = (batch["description"][i].decode("utf-8"),
                                 (batch["category"][i].decode("utf-8"),
                                  batch["subcategory"][i].decode("utf-8")))
      if len(first) < 2:
        raise ValueError(f"{file_pattern}: {len(first)} product(s); negative pairs need at "
                         "least 2 products")
      sampler = cls(list(first), [d for d, _ in first.values()], [g for _, g in first.values()])
      logging.info(
          "negative sampler for %s: %d products in %d (category, subcategory) groups; %d "
          "products are alone in their subcategory and get negatives from any other product",
          file_pattern, sampler.num_products, len(sampler.group_names),
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

  def sample(self, product_ids, seed):
    """Negatives for a batch of product ids.

    Args:
      product_ids: int64 [E].
      seed: int [2] stateless seed.

    Returns:
      (descriptions string [E], negative product ids int64 [E]); never the own product; the same
      (category, subcategory) whenever that group has another product.
    """
    own = self.product_index(product_ids)
    start = tf.gather(self._group_start, own)
    count = tf.gather(self._group_count, own)
    uniform = tf.random.stateless_uniform(tf.shape(own), seed, dtype=tf.float32)
    same_group = count >= 2
    # Same group: uniform over the group's other products (skip own slot).
    offset = tf.cast(tf.floor(uniform * tf.cast(count - 1, tf.float32)), tf.int64)
    offset = tf.minimum(offset, tf.maximum(count - 2, 0))
    in_group = start + offset
    in_group = tf.where(in_group >= own, in_group + 1, in_group)
    # Fallback: uniform over all other products.
    anywhere = tf.cast(tf.floor(uniform * float(self.num_products - 1)), tf.int64)
    anywhere = tf.minimum(anywhere, self.num_products - 2)
    anywhere = tf.where(anywhere >= own, anywhere + 1, anywhere)
    chosen = tf.where(same_group, in_group, anywhere)
    return tf.gather(self._descriptions, chosen), tf.gather(self._product_ids, chosen)


def pair_chunk(product_ids, descriptions, sampler, negative_ratio, seed):
  """Expands a chunk of B image records into positive and negative text-image examples.

  Args:
    product_ids: int64 [B] the records' products.
    descriptions: string [B] their own descriptions.
    sampler: a `NegativeSampler`.
    negative_ratio: r >= 0 (module docstring).
    seed: int [2] stateless seed.

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
  negative_text, negative_product = sampler.sample(own_products, sample_seed)
  return {
      "image_index": image_index,
      "text": tf.where(is_positive, tf.gather(descriptions, image_index), negative_text),
      "tia_label": tf.cast(is_positive, tf.int32),
      "negative_product_id": tf.where(is_positive, tf.constant(-1, tf.int64), negative_product),
  }
