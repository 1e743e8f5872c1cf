"""How much of each toy attribute a linear classifier reads from the patch features (no FashionBERT).

  python tools/probe_feature_attributes.py [--modes grid:32,grid:64,patches:32]
      [--colour_histogram_bins 0 [--histogram_only]] [--num_products 1200] [--output probe.json]

For `--num_products` toy products (generator seed `--seed`, one random pose each) the patch
features of EfficientNet-Lite0 (ImageNet weights) are computed in each mode ("grid:S" or
"patches:S", S = `model.patch_input_size`), with each patch's colour histogram appended when
`--colour_histogram_bins` > 0 (`model.patch_colour_histogram_bins`; `--histogram_only` keeps the
histograms alone). Each image's 64 features are
averaged; a softmax regression on the standardized averages (70% of the products) predicts the
product's main colour (14 classes), garment (13) and sleeve (4, "" for none) on the other 30%.
Printed per mode: wall ms an image and the held-out accuracy per attribute, with colour also on
solid-colour products alone (a patterned garment shows two colours and the regression is asked
for the main one).

What it answers: whether an attribute the demo's model did not align (the attribute-swap probe,
`tools/probe_attribute_alignment.py`) is missing from the features or only unused.
"""

import json
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tf_keras

from fashionbert_tf.configs.model import ModelConfig
from fashionbert_tf.data.toy import fashion_gen
from fashionbert_tf.modeling import patch_colour_histogram
from fashionbert_tf.modeling import patch_features

MODES = flags.DEFINE_list("modes", ["grid:32", "grid:64", "patches:32"],
                          "feature modes, each patch_feature_mode:patch_input_size")
HISTOGRAM_BINS = flags.DEFINE_integer("colour_histogram_bins", 0,
                                      "model.patch_colour_histogram_bins (0: CNN features only)")
HISTOGRAM_ONLY = flags.DEFINE_bool("histogram_only", False,
                                   "probe the colour histograms alone (needs --colour_histogram_bins)")
NUM_PRODUCTS = flags.DEFINE_integer("num_products", 1200, "toy products (one image each)")
SEED = flags.DEFINE_integer("seed", 5, "toy generator seed")
EPOCHS = flags.DEFINE_integer("epochs", 60, "softmax regression epochs")
OUTPUT = flags.DEFINE_string("output", None, "optional JSON file for the results")

ATTRIBUTES = {"colour": "colour", "garment": "shape", "sleeve": "sleeve"}
TRAIN_FRACTION = 0.7


def parse_mode(text):
  """'grid:32' -> ('grid', 32); a malformed mode is an app.UsageError."""
  mode, _, size = text.partition(":")
  if mode not in ("grid", "patches") or not size.isdigit():
    raise app.UsageError(f"--modes: {text!r} is not 'grid:S' or 'patches:S' (S an integer)")
  return mode, int(size)


def toy_images(num_products, seed):
  """(products, uint8 [N, 256, 256, 3]): one randomly chosen pose per product."""
  products = fashion_gen.make_products(num_products, seed=seed)
  rng = np.random.default_rng(seed)
  images = np.stack([fashion_gen.draw_product_image(p, int(rng.integers(0, p.num_poses)), rng)
                     for p in products])
  return products, images


def image_features(mode, size, bins, images, histogram_only=False, batch_size=16):
  """(float32 [N, D] image-averaged patch features, wall ms an image); D = k^3 when
  `histogram_only`."""
  config = ModelConfig(backbone="efficientnet_lite0", patch_feature_mode=mode,
                       patch_input_size=size, patch_colour_histogram_bins=bins,
                       feature_dim=1280 + patch_colour_histogram.histogram_dim(bins))
  compute = patch_features.inference_feature_fn(
      patch_features.build_patch_feature_extractor(config))
  compute(images[:1])  # traces the function outside the timing
  start = time.perf_counter()
  features = np.concatenate([compute(images[i:i + batch_size]).mean(axis=1)
                             for i in range(0, len(images), batch_size)])
  seconds = time.perf_counter() - start
  if histogram_only:
    features = features[:, -patch_colour_histogram.histogram_dim(bins):]
  return features, 1000.0 * seconds / len(images)


def held_out_accuracy(features, labels, num_train, mask=None):
  """Softmax regression on standardized features; accuracy on rows >= num_train (within mask)."""
  train, test = features[:num_train], features[num_train:]
  mean, std = train.mean(0), train.std(0) + 1e-3
  train, test = (train - mean) / std, (test - mean) / std
  tf_keras.utils.set_random_seed(0)
  model = tf_keras.Sequential([tf_keras.layers.Dense(int(labels.max()) + 1)])
  model.compile(tf_keras.optimizers.Adam(1e-3),
                tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(train, labels[:num_train], epochs=EPOCHS.value, batch_size=64, verbose=0)
  correct = model.predict(test, verbose=0).argmax(1) == labels[num_train:]
  if mask is not None:
    correct = correct[mask[num_train:]]
  return float(correct.mean())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  modes = [parse_mode(text) for text in MODES.value]
  try:
    patch_colour_histogram.check_bins(HISTOGRAM_BINS.value)
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  if HISTOGRAM_ONLY.value and not HISTOGRAM_BINS.value:
    raise app.UsageError("--histogram_only needs --colour_histogram_bins > 0")
  products, images = toy_images(NUM_PRODUCTS.value, SEED.value)
  num_train = int(TRAIN_FRACTION * len(products))
  solid = np.array([p.pattern == "solid" for p in products])
  labels = {}
  for name, field in ATTRIBUTES.items():
    values = sorted({getattr(p, field) for p in products})
    labels[name] = np.array([values.index(getattr(p, field)) for p in products])
  results = {}
  print(f"{'mode':12s} {'ms/img':>7s} {'colour':>7s} {'colour (solid)':>15s} {'garment':>8s} "
        f"{'sleeve':>7s}   (held-out accuracy, {len(products) - num_train} images; "
        f"histogram bins {HISTOGRAM_BINS.value}"
        f"{', histograms alone' if HISTOGRAM_ONLY.value else ''})")
  for mode, size in modes:
    features, ms = image_features(mode, size, HISTOGRAM_BINS.value, images, HISTOGRAM_ONLY.value)
    row = {"ms_per_image": ms}
    for name in ATTRIBUTES:
      row[name] = held_out_accuracy(features, labels[name], num_train)
    row["colour_solid"] = held_out_accuracy(features, labels["colour"], num_train, mask=solid)
    results[f"{mode}:{size}"] = row
    print(f"{mode + ':' + str(size):12s} {ms:7.1f} {row['colour']:7.3f} "
          f"{row['colour_solid']:15.3f} {row['garment']:8.3f} {row['sleeve']:7.3f}", flush=True)
  if OUTPUT.value:
    with tf.io.gfile.GFile(OUTPUT.value, "w") as handle:
      json.dump({"histogram_bins": HISTOGRAM_BINS.value, "histogram_only": HISTOGRAM_ONLY.value,
                 "num_products": len(products),
                 "seed": SEED.value, "modes": results}, handle, indent=2)


if __name__ == "__main__":
  app.run(main)
