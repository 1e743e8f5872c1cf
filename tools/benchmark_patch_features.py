"""Cost and agreement of the two patch-feature modes ("patches", "grid") of a CNN backbone.

  python tools/benchmark_patch_features.py --backbone efficientnet_lite0 --sizes 32,64,128 \
      --num_images 256 --timing_images 32 --batch_size 8 --threads 2 --output bench.json

For each patch side S in --sizes (`model.patch_input_size`) and each mode:
  - cost: wall and CPU ms per 256x256 image (and images/s), the backbone in inference mode under one
    `tf.function`, batches of --batch_size images (in "patches" mode 64 x batch_size patches of
    S x S per backbone call; in "grid" mode batch_size images of 8S x 8S), after one warm-up
    batch, on --timing_images images, with TensorFlow's intra-op threads set to --threads;
  - agreement, on --num_images toy Fashion-Gen images (`fashionbert_tf/data/toy/fashion_gen.py`,
    seeded, random poses): per patch, the cosine similarity of its "patches" and "grid" features
    (mean, median, 10th percentile), also after centering each mode on its own mean feature (the
    image-independent component both share; DESIGN.md, "feature conditioning"), the same for
    mismatched pairs (patch k of "patches" against a random other patch of the same image in
    "grid") as the chance level, and how often a patch's "grid" feature is nearest (centered
    cosine) to its own "patches" feature among the 64 of its image. Patches whose pixels are
    nearly uniform (background: pixel std < 2 of 255) are counted and reported apart.

Prints a table and writes everything as JSON (--output). Numbers mean something only on an idle
machine: the load average is printed with them.
"""

import json
import os
import time

from absl import app
from absl import flags
import numpy as np

BACKBONE = flags.DEFINE_string("backbone", "efficientnet_lite0", "A backbone with a grid mode.")
SIZES = flags.DEFINE_list("sizes", ["32", "64", "128"], "Patch sides S (model.patch_input_size).")
NUM_IMAGES = flags.DEFINE_integer("num_images", 256, "Toy images for the agreement measure.")
AGREEMENT_MAX_SIZE = flags.DEFINE_integer(
    "agreement_max_size", 128, "Sizes above this are timed only (agreement costs num_images).")
TIMING_IMAGES = flags.DEFINE_integer("timing_images", 32, "Images timed per mode and size.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per backbone call.")
THREADS = flags.DEFINE_integer("threads", 2, "TensorFlow intra-op threads (inter-op: 1).")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the toy images.")
OUTPUT = flags.DEFINE_string("output", "", "Optional JSON file for the results.")

UNIFORM_PIXEL_STD = 2.0


def toy_images(count, seed):
  """uint8 [count, 256, 256, 3]: toy Fashion-Gen products, one random pose each."""
  from fashionbert_tf.data.toy import fashion_gen  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  products = fashion_gen.make_products(count, seed=seed)
  return np.stack([fashion_gen.draw_product_image(p, int(rng.integers(0, 5)), rng)
                   for p in products])


def uniform_patches(images):
  """bool [N, 64]: patches whose pixel std (over positions and channels) is below 2."""
  n = images.shape[0]
  patches = images.reshape(n, 8, 32, 8, 32, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, 64, -1)
  return patches.astype(np.float32).std(axis=-1) < UNIFORM_PIXEL_STD


def feature_fn(config):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.modeling import patch_features  # pylint: disable=g-import-not-at-top
  extractor = patch_features.build_patch_feature_extractor(config)

  @tf.function(reduce_retracing=True)
  def compute(images):
    return extractor(images, training=False)
  return lambda images: compute(images).numpy()


def run_batches(fn, images, batch_size):
  return np.concatenate([fn(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def time_mode(fn, images, batch_size):
  """(wall ms per image, CPU ms per image, seconds of the first (tracing) batch).

  CPU time is the process's (all threads); on a machine shared with other jobs it moves less than
  wall time, which counts the time the process waits for a core.
  """
  start = time.time()
  fn(images[:batch_size])
  first = time.time() - start
  start, cpu_start = time.time(), time.process_time()
  run_batches(fn, images, batch_size)
  wall, cpu = time.time() - start, time.process_time() - cpu_start
  return 1000.0 * wall / len(images), 1000.0 * cpu / len(images), first


def _unit(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _summary(values):
  values = np.asarray(values, np.float64)
  if not values.size:
    return None
  return {"mean": float(values.mean()), "median": float(np.median(values)),
          "p10": float(np.percentile(values, 10)), "count": int(values.size)}


def agreement(patches_features, grid_features, uniform, seed):
  """Cosine agreement of the two modes' features [N, 64, D] (see the module doc)."""
  rng = np.random.default_rng(seed)
  n = patches_features.shape[0]
  raw = np.sum(_unit(patches_features) * _unit(grid_features), axis=-1)
  a = _unit(patches_features - patches_features.reshape(-1, patches_features.shape[-1]).mean(0))
  b = _unit(grid_features - grid_features.reshape(-1, grid_features.shape[-1]).mean(0))
  centered = np.sum(a * b, axis=-1)
  shift = rng.integers(1, 64, size=(n, 64))
  other = (np.arange(64)[None] + shift) % 64
  mismatched_raw = np.sum(_unit(patches_features) * np.take_along_axis(
      _unit(grid_features), other[..., None], axis=1), axis=-1)
  mismatched_centered = np.sum(a * np.take_along_axis(b, other[..., None], axis=1), axis=-1)
  similarity = np.einsum("nkd,njd->nkj", b, a)  # grid patch k against patches-mode patch j
  own_is_nearest = np.argmax(similarity, axis=-1) == np.arange(64)[None]
  result = {}
  for name, mask in (("all", np.ones_like(uniform)), ("non_uniform", ~uniform),
                     ("uniform", uniform)):
    result[name] = {
        "cosine": _summary(raw[mask]), "cosine_centered": _summary(centered[mask]),
        "mismatched_cosine": _summary(mismatched_raw[mask]),
        "mismatched_cosine_centered": _summary(mismatched_centered[mask]),
        "own_patch_nearest": float(own_is_nearest[mask].mean()) if mask.any() else None,
    }
  return result


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(THREADS.value)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  from fashionbert_tf.modeling import backbones  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.configs.model import ModelConfig  # pylint: disable=g-import-not-at-top

  feature_dim = {"efficientnet_lite0": 1280}.get(BACKBONE.value, 2048)
  images = toy_images(max(NUM_IMAGES.value, TIMING_IMAGES.value), SEED.value)
  uniform = uniform_patches(images[:NUM_IMAGES.value])
  results = {"backbone": BACKBONE.value, "batch_size": BATCH_SIZE.value,
             "threads": THREADS.value, "num_images": NUM_IMAGES.value,
             "timing_images": TIMING_IMAGES.value, "cpus": os.cpu_count(),
             "uniform_patch_fraction": float(uniform.mean()), "sizes": {}}
  print(f"{BACKBONE.value}: batch {BATCH_SIZE.value} images, {THREADS.value} intra-op threads, "
        f"{os.cpu_count()} CPUs; {NUM_IMAGES.value} toy images, {uniform.mean():.1%} of their "
        f"patches uniform")
  reference_grid = None  # (size, grid features) of the first size with agreement
  for size in [int(s) for s in SIZES.value]:
    entry = {}
    features = {}
    for mode in ("patches", "grid"):
      config = ModelConfig(backbone=BACKBONE.value, feature_dim=feature_dim,
                           patch_input_size=size, patch_feature_mode=mode)
      backbones.resolve_patch_feature_mode(config)
      fn = feature_fn(config)
      load_before = os.getloadavg()[0]
      ms, cpu_ms, first = time_mode(fn, images[:TIMING_IMAGES.value], BATCH_SIZE.value)
      entry[mode] = {"ms_per_image": ms, "cpu_ms_per_image": cpu_ms,
                     "images_per_second": 1000.0 / ms, "first_batch_seconds": first,
                     "load_average": [load_before, os.getloadavg()[0]]}
      print(f"  S={size:4d} {mode:8s}: {ms:8.1f} ms/image wall ({1000.0 / ms:6.1f} images/s), "
            f"{cpu_ms:8.1f} CPU ms/image; first batch {first:.1f} s; load {load_before:.1f} -> "
            f"{os.getloadavg()[0]:.1f}", flush=True)
      if size <= AGREEMENT_MAX_SIZE.value:
        features[mode] = run_batches(fn, images[:NUM_IMAGES.value], BATCH_SIZE.value)
    if "grid" in features and reference_grid is None:
      reference_grid = (size, features["grid"])
    if "patches" in features and reference_grid is not None:
      # The cheapest grid (the first size) against the per-patch features at this size.
      entry["agreement_with_grid_at_first_size"] = agreement(
          features["patches"], reference_grid[1], uniform, SEED.value)
      a = entry["agreement_with_grid_at_first_size"]["non_uniform"]
      print(f"    patches S={size} vs grid S={reference_grid[0]} (non_uniform): cosine mean "
            f"{a['cosine']['mean']:.3f} median {a['cosine']['median']:.3f}; centered mean "
            f"{a['cosine_centered']['mean']:.3f}; own patch nearest "
            f"{a['own_patch_nearest']:.1%}", flush=True)
    if len(features) == 2:
      entry["agreement"] = agreement(features["patches"], features["grid"], uniform, SEED.value)
      for name in ("all", "non_uniform"):
        a = entry["agreement"][name]
        print(f"    agreement ({name}, {a['cosine']['count']} patches): cosine mean "
              f"{a['cosine']['mean']:.3f} median {a['cosine']['median']:.3f} (mismatched "
              f"{a['mismatched_cosine']['mean']:.3f}); centered mean "
              f"{a['cosine_centered']['mean']:.3f} median {a['cosine_centered']['median']:.3f} "
              f"p10 {a['cosine_centered']['p10']:.3f} (mismatched "
              f"{a['mismatched_cosine_centered']['mean']:.3f}); own patch nearest "
              f"{a['own_patch_nearest']:.1%}", flush=True)
    results["sizes"][str(size)] = entry
  if OUTPUT.value:
    with open(OUTPUT.value, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)
    print(f"wrote {OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
