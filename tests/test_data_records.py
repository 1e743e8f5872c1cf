"""prepare-data round trip, the TFRecord schema, corrupt / mismatched records."""

import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.data import candidates
from fashionbert_tf.data import pairing
from fashionbert_tf.data import pipeline
from fashionbert_tf.data import prepare
from fashionbert_tf.data import records
from fashionbert_tf.data.sources import fashion_gen_hdf5 as fashiongen_hdf5


def _source_rows(path):
  return {row["record_id"]: row for row in fashiongen_hdf5.iterate_rows(path)}


@pytest.mark.parametrize("split", ["train", "validation"])
def test_prepare_round_trip_every_record_equals_its_source(toy_data_config, split):
  config = toy_data_config
  files = sorted(glob.glob(os.path.join(config.tfrecord_dir, f"{split}-*.tfrecord")))
  assert [os.path.basename(f) for f in files] == [
      f"{split}-00000-of-00002.tfrecord", f"{split}-00001-of-00002.tfrecord"]
  hdf5_path = config.train_hdf5 if split == "train" else config.validation_hdf5
  source = _source_rows(hdf5_path)
  seen = []
  for record in records.read_records(records.split_file_pattern(config.tfrecord_dir, split)):
    row = source[int(record["record_id"])]
    seen.append(int(record["record_id"]))
    for field in records.STRING_FIELDS:
      assert record[field].numpy().decode("utf-8") == row[field], field
    assert int(record["product_id"]) == row["product_id"]
    np.testing.assert_array_equal(record["image"].numpy(), row["image"])   # PNG is lossless
  assert seen == sorted(source)          # every usable row once, in file order
  assert records.verify_records(records.split_file_pattern(config.tfrecord_dir, split),
                                check_images=True) == len(source)


def test_prepare_reports_skipped_rows_and_writes_candidates(toy_data_config):
  info = prepare.load_dataset_info(toy_data_config.tfrecord_dir)
  train = info["splits"]["train"]
  assert train["skipped_empty_description"] >= 1      # the toy's first product has no text
  assert train["num_records"] == train["num_rows"] - train["skipped_empty_description"]
  sets = candidates.load_candidates(toy_data_config.candidates_file)
  assert len(sets["image_to_text"]) == 6 and sets["num_candidates"] == 8


def test_missing_tfrecords_are_named(tmp_path):
  with pytest.raises(records.RecordFileError, match="nothing-here"):
    records.list_record_files(str(tmp_path / "nothing-here-*.tfrecord"))


def test_corrupt_tfrecord_names_file_and_record(toy_data_config, tmp_path):
  source = sorted(glob.glob(os.path.join(toy_data_config.tfrecord_dir, "train-*.tfrecord")))[0]
  data = bytearray(open(source, "rb").read())
  first_length = int.from_bytes(data[:8], "little")
  second_record_start = 8 + 4 + first_length + 4
  data[second_record_start + 20] ^= 0xFF      # inside record 1's length CRC / payload
  corrupt = tmp_path / "train-00000-of-00001.tfrecord"
  corrupt.write_bytes(bytes(data))
  with pytest.raises(records.RecordFileError,
                     match=r"train-00000-of-00001\.tfrecord: corrupt TFRecord file: record 1"):
    records.verify_records(str(corrupt))
  with pytest.raises(records.RecordFileError, match=r"train-00000-of-00001\.tfrecord"):
    pairing.NegativeSampler.from_records(str(corrupt))


def test_truncated_tfrecord_names_file(toy_data_config, tmp_path):
  source = sorted(glob.glob(os.path.join(toy_data_config.tfrecord_dir, "train-*.tfrecord")))[0]
  truncated = tmp_path / "cut.tfrecord"
  truncated.write_bytes(open(source, "rb").read()[:-100])
  with pytest.raises(records.RecordFileError, match=r"cut\.tfrecord: corrupt"):
    records.verify_records(str(truncated))


def test_record_outside_the_schema_names_file_and_index(tmp_path):
  path = str(tmp_path / "foreign.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(tf.train.Example().SerializeToString())
  with pytest.raises(records.RecordFileError, match=r"foreign\.tfrecord.*record in 0\.\.0"):
    records.verify_records(path)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"foreign\.tfrecord:0"):
    list(records.read_records(path))


def test_patch_features_pass_through_the_pipeline(toy_data_config, tmp_path):
  """Copies of the shards with precomputed features -> batches carry them instead of images."""
  feature_dim = 5
  features_dir = str(tmp_path / "features")
  os.makedirs(features_dir)
  expected = {}
  for path in sorted(glob.glob(os.path.join(toy_data_config.tfrecord_dir, "train-*"))):
    with tf.io.TFRecordWriter(os.path.join(features_dir, os.path.basename(path))) as writer:
      for serialized in tf.data.TFRecordDataset(path):
        example = tf.train.Example.FromString(serialized.numpy())
        record_id = example.features.feature["record_id"].int64_list.value[0]
        features = np.full([64, feature_dim], record_id, np.float32)
        features[:, 0] = np.arange(64)
        example.features.feature["patch_features"].bytes_list.value.append(
            records.serialize_patch_features(features))
        writer.write(example.SerializeToString())
        expected[record_id] = features
  config = toy_data_config.replace(features_tfrecord_dir=features_dir)
  dataset = pipeline.build_pretraining_dataset(config, "train", 8, image_mode=False)
  for batch in dataset.take(2):
    assert "image" not in batch
    features = batch["patch_features"]
    assert features.dtype == tf.float32 and features.shape[1:] == (64, feature_dim)
    for row in features.numpy():
      np.testing.assert_array_equal(row, expected[int(row[0, 1])])
  parsed = next(iter(records.read_records(os.path.join(features_dir, "train-*"),
                                          with_patch_features=True, feature_dim=feature_dim)))
  np.testing.assert_array_equal(parsed["patch_features"].numpy(),
                                expected[int(parsed["record_id"])])


def test_prepare_replaces_stale_shards_and_candidates(toy_data_config, tmp_path):
  config = toy_data_config.replace(tfrecord_dir=str(tmp_path / "out"), num_shards=1,
                                   candidates_file=str(tmp_path / "out" / "c.json"),
                                   num_candidates=50)
  os.makedirs(config.tfrecord_dir)
  stale = records.shard_path(config.tfrecord_dir, "train", 3, 7)
  open(stale, "w").close()
  open(config.candidates_file, "w").close()
  info = prepare.prepare_dataset(config)      # 12 validation products < 51: no candidate sets
  assert not os.path.exists(stale)
  assert not os.path.exists(config.candidates_file)
  assert info["candidates_file"] is None and "51" in info["candidates_error"]
  assert len(glob.glob(os.path.join(config.tfrecord_dir, "*.tfrecord"))) == 2
  with open(os.path.join(config.tfrecord_dir, "dataset_info.json")) as handle:
    assert json.load(handle)["num_shards"] == 1
  shutil.rmtree(config.tfrecord_dir)


def test_feature_shards_are_found_where_the_precompute_tool_writes_them(toy_data_config,
                                                                        tmp_path):
  config = toy_data_config.replace(tfrecord_dir=str(tmp_path / "tfrecords"))
  assert pipeline.split_file_pattern(config, "train", image_mode=False) == (
      records.split_file_pattern(config.tfrecord_dir, "train"))
  os.makedirs(str(tmp_path / "tfrecords_features"))
  open(records.shard_path(str(tmp_path / "tfrecords_features"), "train", 0, 1), "w").close()
  assert pipeline.split_file_pattern(config, "train", image_mode=False) == (
      records.split_file_pattern(str(tmp_path / "tfrecords_features"), "train"))
  explicit = config.replace(features_tfrecord_dir=str(tmp_path / "elsewhere"))
  assert pipeline.split_file_pattern(explicit, "validation", image_mode=False) == (
      records.split_file_pattern(str(tmp_path / "elsewhere"), "validation"))
