"""Precomputed-feature mode: features written into TFRecord copies equal the online features."""

import os

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.configs.model import ModelConfig
from fashionbert_tf.data import records
from fashionbert_tf.modeling import feature_precompute
from fashionbert_tf.modeling import patch_features

TINY_RESNEXT = dict(backbone="resnext101", feature_dim=256, resnext_blocks_per_stage=[1, 1, 1, 1],
                    resnext_groups=2, resnext_width_per_group=2, resnext_base_width=8)


def write_shards(directory, num_records=5, num_shards=2, seed=0):
  """Writes `num_records` toy records over `num_shards` shards; returns the images by record_id."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  images = {}
  writers = [tf.io.TFRecordWriter(records.shard_path(directory, "train", i, num_shards))
             for i in range(num_shards)]
  for record_id in range(num_records):
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    images[record_id] = image
    row = dict(record_id=record_id, product_id=100 + record_id // 2,
               description=f"a black wool coat number {record_id}", name="coat",
               category="CLOTHING", subcategory="COATS", pose="id_gridfs_1")
    example = records.make_example(row, records.encode_image(image, "png"))
    writers[record_id % num_shards].write(example.SerializeToString())
  for writer in writers:
    writer.close()
  return images


@pytest.mark.parametrize("overrides", [
    dict(backbone="linear", feature_dim=16), TINY_RESNEXT,
    dict(backbone="linear", feature_dim=16 + 8, patch_colour_histogram_bins=2)],
                         ids=["linear", "tiny_resnext", "linear_with_colour_histogram"])
def test_precomputed_features_equal_online_features(tmp_path, overrides):
  config = ModelConfig(**overrides)
  source_dir, output_dir = str(tmp_path / "records"), str(tmp_path / "features")
  images = write_shards(source_dir)
  summary = feature_precompute.precompute_patch_features(
      config, os.path.join(source_dir, "*.tfrecord"), output_dir, batch_size=2, verbose=False)
  assert sorted(os.path.basename(p) for p in summary) == sorted(os.listdir(source_dir))
  assert sum(s["records"] for s in summary.values()) == 5

  # The model side builds its own extractor from the same config (as build_fashionbert does).
  online = patch_features.build_patch_feature_extractor(config)
  parsed = list(records.read_records(os.path.join(output_dir, "*.tfrecord"),
                                     with_patch_features=True, feature_dim=config.feature_dim))
  assert sorted(int(r["record_id"]) for r in parsed) == list(range(5))
  for record in parsed:
    record_id = int(record["record_id"])
    np.testing.assert_array_equal(record["image"].numpy(), images[record_id])
    assert record["description"].numpy().decode() == f"a black wool coat number {record_id}"
    expected = online(images[record_id][None], training=False).numpy()[0]
    stored = record["patch_features"].numpy()
    assert stored.shape == (64, config.feature_dim) and stored.dtype == np.float32
    # Batches of 2 here and of 1 online run different oneDNN convolution kernels: float32
    # round-off of ~1e-5 on features of size ~0.1-1 (seen on an AMX CPU), far below any real error.
    np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-4)


def test_records_keep_their_order_and_existing_features_are_replaced(tmp_path):
  config = ModelConfig(backbone="linear", feature_dim=4)
  source_dir = str(tmp_path / "records")
  write_shards(source_dir, num_records=3, num_shards=1)
  first = str(tmp_path / "first")
  feature_precompute.precompute_patch_features(
      config, os.path.join(source_dir, "*.tfrecord"), first, verbose=False)
  summary = feature_precompute.precompute_patch_features(
      config, os.path.join(first, "*.tfrecord"), str(tmp_path / "second"), verbose=False)
  assert [s["replaced"] for s in summary.values()] == [3]
  ids = [int(r["record_id"]) for r in records.read_records(
      str(tmp_path / "second" / "*.tfrecord"), decode=False)]
  assert ids == [0, 1, 2]


def test_output_folder_must_differ_and_corrupt_shards_are_named(tmp_path):
  config = ModelConfig(backbone="linear", feature_dim=4)
  source_dir = str(tmp_path / "records")
  write_shards(source_dir, num_records=2, num_shards=1)
  with pytest.raises(ValueError, match="must go to another folder"):
    feature_precompute.precompute_patch_features(
        config, os.path.join(source_dir, "*.tfrecord"), source_dir, verbose=False)
  bad = str(tmp_path / "bad" / "train-00000-of-00001.tfrecord")
  os.makedirs(os.path.dirname(bad))
  with open(os.path.join(source_dir, "train-00000-of-00001.tfrecord"), "rb") as f:
    data = f.read()
  with open(bad, "wb") as f:
    f.write(data[:-40])  # Truncated: the second record is cut.
  with pytest.raises(records.RecordFileError, match="bad/train-00000-of-00001.tfrecord"):
    feature_precompute.precompute_patch_features(
        config, bad, str(tmp_path / "out"), verbose=False)
  assert not os.listdir(str(tmp_path / "out"))  # No half-written shard left behind.
