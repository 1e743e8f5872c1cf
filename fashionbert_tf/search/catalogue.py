"""Product images of the search catalogue, as patch features held in memory.

A product's image is its first record (first pose) with that `product_id` in the image TFRecords
(`search.image_records`, default: the validation split's image shards, then the train split's:
`data.tfrecord_dir`'s, or TFDS's with `data.source: tfds`). Its patch features are computed once
by the model's own backbone (the pretraining run's `PatchFeatureExtractor`; the linear demo
backbone is seeded, so this is the same function the precomputed pretraining features came from)
and held as float32 [P, 64, D] (P products: 300 x 64 x 2048 x 4 bytes = 157 MB for the toy
catalogue). The standardization is applied inside the model.
"""

import dataclasses
import glob
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import pipeline
from fashionbert_tf.data import records


class MissingProductImageError(ValueError):
  """A product of the search logs has no image record (the message names it and the files)."""


@dataclasses.dataclass
class CatalogueFeatures:
  """Patch features of the catalogue's products: `features[index_of[product_id]]`."""
  product_ids: np.ndarray   # int64 [P]
  features: np.ndarray      # float32 [P, 64, D]

  def __post_init__(self):
    self.index_of = {int(p): i for i, p in enumerate(self.product_ids)}

  def indices(self, product_ids):
    """int32 [N] rows of `features` for `product_ids`; an unknown id is an error."""
    try:
      return np.asarray([self.index_of[int(p)] for p in product_ids], np.int32)
    except KeyError as error:
      raise MissingProductImageError(f"product {error.args[0]} has no catalogue features") from None


def image_record_files(config):
  """The image TFRecord files to search, in order (validation split first, then train)."""
  patterns = config.search.image_records or ",".join(
      pipeline.split_file_pattern(config.data, split) for split in ("validation", "train"))
  files = []
  for pattern in patterns.split(","):
    files += sorted(glob.glob(pattern.strip()))
  if not files:
    raise FileNotFoundError(f"no image TFRecords match {patterns!r} (search.image_records / "
                            "data.tfrecord_dir, or TFDS's shards with data.source: tfds); run "
                            "prepare-data (or the demo) first")
  return files


def read_product_images(files, product_ids):
  """{product_id: uint8 [256, 256, 3]} for each wanted id: its first record in `files`.

  Raises:
    MissingProductImageError: some ids have no record (names up to 5 and the files read).
  """
  wanted = {int(p) for p in product_ids}
  encoded = {}
  for path in files:
    for serialized in tf.data.TFRecordDataset(path):
      record = records.parse_record(serialized, decode=False)
      product_id = int(record["product_id"])
      if product_id in wanted and product_id not in encoded:
        encoded[product_id] = record["image"]
      if len(encoded) == len(wanted):
        break
    if len(encoded) == len(wanted):
      break
  missing = sorted(wanted - set(encoded))
  if missing:
    raise MissingProductImageError(
        f"{len(missing)} products of the search logs have no image record (e.g. {missing[:5]}) "
        f"in {', '.join(os.path.basename(f) for f in files)}")
  return {p: records.decode_image(image).numpy() for p, image in encoded.items()}


def compute_catalogue_features(extractor, config, product_ids, batch_size=32):
  """`CatalogueFeatures` for `product_ids` (sorted, unique) with the backbone `extractor`."""
  start = time.time()
  ids = np.asarray(sorted({int(p) for p in product_ids}), np.int64)
  images = read_product_images(image_record_files(config), ids)
  call = tf.function(lambda batch: extractor(batch, training=False), reduce_retracing=True)
  chunks = []
  for begin in range(0, len(ids), batch_size):
    batch = np.stack([images[int(p)] for p in ids[begin:begin + batch_size]])
    chunks.append(tf.cast(call(tf.constant(batch)), tf.float32).numpy())
  features = np.concatenate(chunks)
  logging.info("catalogue patch features: %d products -> %s in %.1f s", len(ids),
               list(features.shape), time.time() - start)
  return CatalogueFeatures(ids, features)
