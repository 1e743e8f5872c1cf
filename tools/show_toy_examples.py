"""`tfds.show_examples` of a few records of the `fashion_gen` TFDS dataset, saved as a PNG.

  python tools/show_toy_examples.py                                  # -> docs/fashion_gen_toy_examples.png
  python tools/show_toy_examples.py --config full --data_dir data/tfds --output my.png

Builds the dataset first when it is not prepared (the `toy` config needs nothing; `full` needs the
two HDF5 files in --manual_dir). Each tile shows one product's first pose with its category,
subcategory and cleaned description (wrapped) as the title. Offline; building the toy config
takes about a minute on 2 cores.
"""

import os
import tempfile
import textwrap

from absl import app
from absl import flags

import matplotlib
matplotlib.use("Agg")
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from fashionbert_tf.data.sources import fashion_gen_tfds_builder

CONFIG = flags.DEFINE_enum("config", "toy", ["toy", "full"], "Builder config.")
DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data dir; empty = a temporary folder.")
MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "Folder of the real HDF5 files (full).")
SPLIT = flags.DEFINE_string("split", "validation", "Split to show.")
NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 6, "Records shown.")
OUTPUT = flags.DEFINE_string("output", "docs/fashion_gen_toy_examples.png", "PNG written.")


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as temporary:
    builder = fashion_gen_tfds_builder.FashionGen(config=CONFIG.value,
                                             data_dir=DATA_DIR.value or temporary)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=MANUAL_DIR.value or None))
    # One image per product (its first pose), so the tiles show different products.
    dataset = builder.as_dataset(split=SPLIT.value).filter(
        lambda example: tf.equal(example["pose"], "id_gridfs_1"))
    figure = tfds.show_examples(
        dataset.take(NUM_EXAMPLES.value), builder.info, rows=2, cols=NUM_EXAMPLES.value // 2,
        image_key="image", plot_scale=3.2)
    # Titles: product id and the wrapped, cleaned description.
    for axis, example in zip(figure.axes, tfds.as_numpy(dataset.take(NUM_EXAMPLES.value))):
      text = example["description"].decode("utf-8")
      title = f"{example['category'].decode()} / {example['subcategory'].decode()}: {text}"
      axis.set_title("\n".join(textwrap.wrap(title, 38)[:5]), fontsize=7)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(OUTPUT.value)), exist_ok=True)
    figure.savefig(OUTPUT.value, dpi=80)
  print(f"{NUM_EXAMPLES.value} fashion_gen/{CONFIG.value} {SPLIT.value} records -> {OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
