"""The negatives index: written by prepare-data, read instead of the shards, rebuilt when stale."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.data import negatives_index
from fashionbert_tf.data import pairing
from fashionbert_tf.data import records


def copied_shards(toy_data_config, tmp_path):
  directory = str(tmp_path / "tfrecords")
  shutil.copytree(toy_data_config.tfrecord_dir, directory)
  return directory, records.split_file_pattern(directory, "train")


def test_prepare_writes_an_index_that_matches_a_scan_of_the_shards(toy_data_config):
  for split in records.SPLITS:
    pattern = records.split_file_pattern(toy_data_config.tfrecord_dir, split)
    path = negatives_index.index_path(pattern)
    assert path == os.path.join(toy_data_config.tfrecord_dir, f"{split}.negatives_index.json")
    with open(path, encoding="utf-8") as handle:
      written = json.load(handle)
    scanned = negatives_index.build_index(pattern)
    assert written["products"] == scanned["products"]
    assert written["fingerprint"] == scanned["fingerprint"]
    assert sum(f["num_records"] for f in written["files"]) == sum(
        1 for _ in records.read_records(pattern, decode=False))
    index, how = negatives_index.load_or_build(pattern)
    assert how == "loaded" and index == written


def test_sampler_from_the_index_equals_the_sampler_from_a_scan(toy_data_config, tmp_path):
  directory, pattern = copied_shards(toy_data_config, tmp_path)
  from_index = pairing.NegativeSampler.from_records(pattern)
  os.remove(negatives_index.index_path(pattern))
  pairing._SAMPLER_CACHE.clear()  # pylint: disable=protected-access
  from_scan = pairing.NegativeSampler.from_records(pattern)
  assert os.path.exists(negatives_index.index_path(pattern))  # written back
  np.testing.assert_array_equal(from_index.product_ids, from_scan.product_ids)
  np.testing.assert_array_equal(from_index.record_counts, from_scan.record_counts)
  assert from_index.descriptions == from_scan.descriptions
  seed = tf.constant([3, 4], tf.int64)
  ids = tf.constant(from_scan.product_ids[:5])
  for a, b in zip(from_index.sample(ids, seed), from_scan.sample(ids, seed)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_rewritten_shard_makes_the_index_stale_and_it_is_rebuilt(toy_data_config, tmp_path,
                                                                  caplog):
  caplog.set_level(logging.INFO, logger="absl")  # whatever level an earlier test left
  directory, pattern = copied_shards(toy_data_config, tmp_path)
  shard = records.list_record_files(pattern)[0]
  kept = [r.numpy() for r in tf.data.TFRecordDataset(shard)][:-2]  # drop its last two records
  with tf.io.TFRecordWriter(shard) as writer:
    for record in kept:
      writer.write(record)
  with open(negatives_index.index_path(pattern), encoding="utf-8") as handle:
    old = json.load(handle)
  index, how = negatives_index.load_or_build(pattern)
  assert how == "built" and "the shards changed" in caplog.text
  assert index["files"][0]["num_records"] == len(kept) == old["files"][0]["num_records"] - 2
  assert index["fingerprint"] != old["fingerprint"]
  # Written back: the next start reads it.
  assert negatives_index.load_or_build(pattern) == (index, "loaded")


def test_an_index_of_other_files_or_a_broken_one_is_rebuilt(toy_data_config, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger="absl")  # whatever level an earlier test left
  directory, pattern = copied_shards(toy_data_config, tmp_path)
  path = negatives_index.index_path(pattern)
  with open(path, encoding="utf-8") as handle:
    index = json.load(handle)
  index["files"][0]["name"] = "other-00000-of-00002.tfrecord"
  negatives_index.write_index(index, path)
  assert negatives_index.load_or_build(pattern)[1] == "built"
  assert "it describes other files" in caplog.text
  with open(path, "w", encoding="utf-8") as handle:
    handle.write("{not json")
  assert negatives_index.load_or_build(pattern)[1] == "built"
  assert "does not read" in caplog.text


def test_a_corrupt_shard_is_an_error_or_counted_up_to_its_unreadable_record(toy_data_config,
                                                                            tmp_path):
  directory, pattern = copied_shards(toy_data_config, tmp_path)
  shard = records.list_record_files(pattern)[0]
  with open(shard, "rb") as handle:
    content = handle.read()
  with open(shard, "wb") as handle:
    handle.write(content[:len(content) // 2])   # cut short
  readable = records._count_readable(shard)  # pylint: disable=protected-access
  with pytest.raises(records.RecordFileError, match=f"{shard}: corrupt TFRecord file: record "
                     f"{readable} "):
    negatives_index.build_index(pattern)
  index = negatives_index.build_index(pattern, skip_corrupt=True)
  entry = index["files"][0]
  assert entry["num_records"] == entry["first_unreadable_record"] == readable
  assert "first_unreadable_record" not in index["files"][1]
