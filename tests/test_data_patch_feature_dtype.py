"""Half-precision patch-feature stores (`data.patch_feature_dtype`): half the file size, read back
as float32 within the stored type's precision, by every reader of the float32 store."""

import os

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import records
from fashionbert_tf.modeling import feature_precompute
from fashionbert_tf.configs.model import ModelConfig

FEATURE_DIM = 256
NUM_RECORDS = 6
# Round to nearest: relative error <= 2^-11 (float16, 11 significant bits) or 2^-8 (bfloat16), plus
# float16's subnormal spacing 2^-24 near zero.
TOLERANCE = {"float16": (2.0**-11, 2.0**-24), "bfloat16": (2.0**-8, 1e-38)}


def _features(images):
  """A deterministic feature function: [b, 64, 256] of spread-out values (|x| up to ~1e3)."""
  images = np.asarray(images, np.float32)
  base = images.reshape(images.shape[0], 64, -1)[:, :, :FEATURE_DIM] / 255.0 - 0.5
  scale = np.logspace(-3, 3, FEATURE_DIM, dtype=np.float32)
  return base * scale


def _write_source(directory):
  rng = np.random.default_rng(0)
  os.makedirs(directory)
  with tf.io.TFRecordWriter(records.shard_path(directory, "train", 0, 1)) as writer:
    for record_id in range(NUM_RECORDS):
      image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
      row = dict(record_id=record_id, product_id=record_id, description=f"coat {record_id}",
                 name="coat", category="CLOTHING", subcategory="COATS", pose="front")
      writer.write(records.make_example(row, records.encode_image(image, "jpeg")).
                   SerializeToString())


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
  root = tmp_path_factory.mktemp("stores")
  _write_source(str(root / "source"))
  paths = {}
  for dtype in ("float32", "float16", "bfloat16"):
    feature_precompute.precompute_patch_features(
        ModelConfig(backbone="linear", feature_dim=FEATURE_DIM),
        str(root / "source" / "*.tfrecord"), str(root / dtype), batch_size=4, verbose=False,
        feature_fn=_features, feature_dtype=dtype)
    paths[dtype] = str(root / dtype / "train-00000-of-00001.tfrecord")
  return paths


def _read(path):
  parsed = records.read_records(path, with_patch_features=True, feature_dim=FEATURE_DIM)
  return {int(r["record_id"]): r[contract.FEATURES_KEY].numpy() for r in parsed}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_store_halves_the_file_and_round_trips(stores, dtype):
  ratio = os.path.getsize(stores[dtype]) / os.path.getsize(stores["float32"])
  # The features halve; the rest of the record (a ~100 KB noise JPEG, texts) stays.
  image_bytes = sum(len(r["image"].numpy()) for r in records.read_records(
      stores["float32"], decode=False))
  feature_bytes = NUM_RECORDS * 64 * FEATURE_DIM * 4
  expected = (feature_bytes / 2 + image_bytes) / (feature_bytes + image_bytes)
  assert abs(ratio - expected) < 0.01, (ratio, expected)
  exact, stored = _read(stores["float32"]), _read(stores[dtype])
  relative, absolute = TOLERANCE[dtype]
  largest_error = 0.0
  for record_id, features in exact.items():
    assert stored[record_id].dtype == np.float32 and stored[record_id].shape == (64, FEATURE_DIM)
    error = np.abs(stored[record_id] - features)
    assert np.all(error <= relative * np.abs(features) + absolute), dtype
    largest_error = max(largest_error, float((error / np.maximum(np.abs(features), 1e-30)).max()))
  assert largest_error > relative / 8   # it was rounded: not a float32 store by another name


def test_the_size_ratio_is_one_half_for_features_alone():
  features = np.random.default_rng(1).normal(size=(64, 2048)).astype(np.float32)
  full = len(records.serialize_patch_features(features))
  half = len(records.serialize_patch_features(features, "float16"))
  assert full > 64 * 2048 * 4 and abs(half / full - 0.5) < 0.001   # 512 KB -> 256 KB an image


def test_float16_overflow_is_an_error_naming_the_setting():
  features = np.full((64, 8), 1e5, np.float32)
  with pytest.raises(ValueError, match="data.patch_feature_dtype"):
    records.serialize_patch_features(features, "float16")
  np.testing.assert_allclose(
      records.parse_patch_features(records.serialize_patch_features(features, "bfloat16")),
      features, rtol=2.0**-8)


def test_the_pipeline_infers_the_feature_dim_of_a_half_store(stores):
  from fashionbert_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  assert pipeline._infer_feature_dim([stores["bfloat16"]]) == FEATURE_DIM  # pylint: disable=protected-access
