"""Per-dimension statistics of the training images' patch features, computed once and stored.

`model.patch_feature_normalization: standardize` (see `patch_feature_normalization.py`) needs the
mean and standard deviation of every feature dimension over the patches of the training images.
They are computed once, by the backbone the model uses, and stored with the data:

  <data.tfrecord_dir>/patch_feature_statistics/<backbone>-<fingerprint hash>.npz
  (or `model.patch_feature_statistics` when set)

holding `mean`, `std` float32 [D], `num_images`, `num_patches` and the backbone `fingerprint`
(a JSON string of every setting that changes the features: backbone, weights file, seed, sizes,
pixel scaling), so statistics of another backbone are never applied by mistake: the default path
differs per fingerprint, and an explicit path with another fingerprint is an error.

Who writes them: `tools/precompute_patch_features.py` (from the features it has just written), the
demo, or `fashionbert pretrain` on its first start when the file is missing (it reads the first
`model.feature_statistics_max_images` training records, runs the backbone or reads precomputed
features, and saves the file). Nothing is recomputed per batch: the model holds them as constants.

Standard deviation floor: dimensions that hardly vary (e.g. ReLU units of a CNN that are almost
always 0) would be blown up into rare huge values by 1 / std; std is floored at
`STD_FLOOR_FRACTION` x the median std over dimensions (a constant dimension becomes 0).
"""

import dataclasses
import hashlib
import json
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import pipeline
from fashionbert_tf.data import records
from fashionbert_tf.modeling import patch_features

STATISTICS_DIR = "patch_feature_statistics"
STD_FLOOR_FRACTION = 0.01
# Settings of `model` that change what the backbone outputs.
_FINGERPRINT_KEYS = ("backbone", "backbone_weights", "backbone_seed", "feature_dim",
                     "patch_input_size", "image_normalization", "resnext_blocks_per_stage",
                     "resnext_groups", "resnext_width_per_group", "resnext_base_width")


@dataclasses.dataclass
class FeatureStatistics:
  """mean, std float32 [D]; counts; the backbone fingerprint; where they came from."""
  mean: np.ndarray
  std: np.ndarray
  num_images: int
  num_patches: int
  fingerprint: str
  source: str = ""


def backbone_fingerprint(model_config):
  """A JSON string of the settings that determine the patch features (plus the weights file size)."""
  values = {key: getattr(model_config, key) for key in _FINGERPRINT_KEYS}
  values["resnext_blocks_per_stage"] = list(values["resnext_blocks_per_stage"])
  if model_config.patch_feature_mode != "patches":  # Fingerprints of "patches" stay as they were.
    values["patch_feature_mode"] = model_config.patch_feature_mode
  if model_config.patch_colour_histogram_bins:
    values["patch_colour_histogram_bins"] = model_config.patch_colour_histogram_bins
    values["patch_colour_histogram_scale"] = model_config.patch_colour_histogram_scale
  weights = model_config.backbone_weights
  values["backbone_weights_bytes"] = os.path.getsize(weights) if weights and os.path.exists(
      weights) else 0
  return json.dumps(values, sort_keys=True)


def default_path(data_config, model_config):
  """`<tfrecord_dir>/patch_feature_statistics/<backbone>-<hash>.npz`, or the configured path."""
  if model_config.patch_feature_statistics:
    return model_config.patch_feature_statistics
  digest = hashlib.sha1(backbone_fingerprint(model_config).encode("utf-8")).hexdigest()[:12]
  return os.path.join(data_config.tfrecord_dir, STATISTICS_DIR,
                      f"{model_config.backbone}-{digest}.npz")


class _Accumulator:
  """Streaming per-dimension mean and variance (Chan et al.'s parallel update, float64)."""

  def __init__(self):
    self.count, self.mean, self.m2 = 0, None, None

  def add(self, features):
    """features: float [N, D] (patches as rows)."""
    features = np.asarray(features, np.float64)
    if not np.all(np.isfinite(features)):
      raise ValueError("patch features contain NaN or Inf")
    count = features.shape[0]
    if count == 0:
      return
    mean = features.mean(axis=0)
    m2 = ((features - mean) ** 2).sum(axis=0)
    if self.mean is None:
      self.count, self.mean, self.m2 = count, mean, m2
      return
    total = self.count + count
    delta = mean - self.mean
    self.mean = self.mean + delta * count / total
    self.m2 = self.m2 + m2 + delta ** 2 * self.count * count / total
    self.count = total


def statistics_from_batches(feature_batches, fingerprint, source=""):
  """`FeatureStatistics` of an iterable of patch-feature batches float [b, 64, D].

  Raises:
    ValueError: no features, NaN / Inf in them, or inconsistent D.
  """
  accumulator = _Accumulator()
  num_images = 0
  for batch in feature_batches:
    batch = np.asarray(batch)
    if batch.ndim != 3 or batch.shape[1] != contract.NUM_PATCHES:
      raise ValueError(f"patch features of shape {batch.shape}; expected [b, 64, D] ({source})")
    try:
      accumulator.add(batch.reshape(-1, batch.shape[-1]))
    except ValueError as error:
      raise ValueError(f"{source}: {error}") from None
    num_images += batch.shape[0]
  if accumulator.mean is None:
    raise ValueError(f"no patch features to compute statistics from ({source})")
  std = np.sqrt(accumulator.m2 / accumulator.count)
  floor = max(STD_FLOOR_FRACTION * float(np.median(std)), 1e-12)
  return FeatureStatistics(mean=accumulator.mean.astype(np.float32),
                           std=np.maximum(std, floor).astype(np.float32), num_images=num_images,
                           num_patches=int(accumulator.count), fingerprint=fingerprint,
                           source=source)


def save_statistics(statistics, path):
  """Writes `statistics` to `path` (.npz; atomic rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp_path = path + ".tmp.npz"
  np.savez(tmp_path, mean=statistics.mean, std=statistics.std,
           num_images=np.int64(statistics.num_images),
           num_patches=np.int64(statistics.num_patches),
           fingerprint=np.array(statistics.fingerprint))
  os.replace(tmp_path, path)
  return path


def load_statistics(path, expected_fingerprint=None):
  """Reads statistics written by `save_statistics`.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: unreadable or malformed file, or (with `expected_fingerprint`) statistics of
      another backbone setting (the message names the file and both settings).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"patch feature statistics not found: {path}")
  try:
    with np.load(path) as data:
      statistics = FeatureStatistics(
          mean=data["mean"].astype(np.float32), std=data["std"].astype(np.float32),
          num_images=int(data["num_images"]), num_patches=int(data["num_patches"]),
          fingerprint=str(data["fingerprint"]), source=path)
  except (OSError, KeyError, ValueError) as error:
    raise ValueError(f"{path}: not a patch feature statistics file ({error})") from None
  if statistics.mean.ndim != 1 or statistics.mean.shape != statistics.std.shape:
    raise ValueError(f"{path}: mean {statistics.mean.shape} and std {statistics.std.shape} must "
                     "be [D]")
  if expected_fingerprint is not None and statistics.fingerprint != expected_fingerprint:
    raise ValueError(
        f"{path}: the patch feature statistics were computed with backbone settings "
        f"{statistics.fingerprint}, but the model uses {expected_fingerprint}; delete the file "
        "or point model.patch_feature_statistics elsewhere")
  return statistics


def _feature_batches_from_records(config, max_images, batch_size):
  """Patch-feature batches of the first `max_images` training records (file order)."""
  model_config = config.model
  precomputed = model_config.use_precomputed_features
  pattern = pipeline.split_file_pattern(config.data, "train", image_mode=not precomputed)
  dataset = records.read_records(pattern, decode=not precomputed, with_patch_features=precomputed,
                                 feature_dim=model_config.feature_dim if precomputed else None)
  if max_images > 0:
    dataset = dataset.take(max_images)
  key = contract.FEATURES_KEY if precomputed else contract.IMAGE_KEY
  dataset = dataset.map(lambda record: record[key]).batch(batch_size)
  if precomputed:
    return pattern, (batch.numpy() for batch in dataset)
  feature_fn = patch_features.inference_feature_fn(
      patch_features.build_patch_feature_extractor(model_config))
  return pattern, (feature_fn(images) for images in dataset)


def compute_statistics(config, batch_size=32):
  """Statistics of the training split's patch features per `config` (an ExperimentConfig)."""
  start = time.time()
  max_images = config.model.feature_statistics_max_images
  pattern, batches = _feature_batches_from_records(config, max_images, batch_size)
  statistics = statistics_from_batches(batches, backbone_fingerprint(config.model),
                                       source=pattern)
  logging.info(
      "patch feature statistics of %d training images (%d patches, %s) in %.1f s: per-dimension "
      "std median %.4g (range %.4g-%.4g), |mean| median %.4g", statistics.num_images,
      statistics.num_patches, pattern, time.time() - start, float(np.median(statistics.std)),
      float(statistics.std.min()), float(statistics.std.max()),
      float(np.median(np.abs(statistics.mean))))
  return statistics


def write_statistics(config):
  """Computes the statistics for `config` and saves them at `default_path`; returns them."""
  path = default_path(config.data, config.model)
  statistics = compute_statistics(config)
  save_statistics(statistics, path)
  statistics.source = path
  logging.info("patch feature statistics -> %s", path)
  return statistics


def ensure_statistics(config):
  """Loads the statistics for `config`'s backbone, computing and saving them when missing.

  Returns:
    `FeatureStatistics` (its `source` is the file path).
  """
  path = default_path(config.data, config.model)
  if os.path.exists(path):
    statistics = load_statistics(path, expected_fingerprint=backbone_fingerprint(config.model))
    logging.info("patch feature statistics from %s (%d training images)", path,
                 statistics.num_images)
    return statistics
  logging.info("patch feature statistics missing (%s): computing them from the training split",
               path)
  return write_statistics(config)
