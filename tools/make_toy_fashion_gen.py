"""Writes the toy Fashion-Gen HDF5 files (train + validation), seeded, offline.

  python tools/make_toy_fashion_gen.py --output_dir data/toy
"""

import os
import time

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.data.toy import fashion_gen

OUTPUT_DIR = flags.DEFINE_string("output_dir", "data/toy", "Folder for the two HDF5 files.")
NUM_TRAIN_PRODUCTS = flags.DEFINE_integer("num_train_products", 320,
                                          "Train products (1-6 images each).")
NUM_VALIDATION_PRODUCTS = flags.DEFINE_integer(
    "num_validation_products", 120,
    "Validation products; >= 101 so full 100-candidate retrieval sets exist.")
NUM_EMPTY_DESCRIPTIONS = flags.DEFINE_integer(
    "num_empty_descriptions", 2, "Train products given an empty description (exercise skipping).")
SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


def main(argv):
  del argv
  start = time.time()
  written = fashion_gen.make_toy_fashiongen(
      os.path.join(OUTPUT_DIR.value, "fashiongen_toy_train.h5"),
      os.path.join(OUTPUT_DIR.value, "fashiongen_toy_validation.h5"),
      num_train_products=NUM_TRAIN_PRODUCTS.value,
      num_validation_products=NUM_VALIDATION_PRODUCTS.value,
      seed=SEED.value, num_empty_descriptions=NUM_EMPTY_DESCRIPTIONS.value)
  for split, (path, num_rows) in written.items():
    logging.info("%s: %d images -> %s", split, num_rows, path)
  logging.info("done in %.1f s", time.time() - start)


if __name__ == "__main__":
  app.run(main)
