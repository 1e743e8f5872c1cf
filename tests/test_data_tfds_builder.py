"""The `fashion_gen` TFDS builder and `data.source: tfds`: build, round trip, metadata, errors,
the pipeline's batch contract from TFDS, ReadConfig sharding."""

import hashlib
import json
import os

import h5py
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from fashionbert_tf.data import candidates as candidates_lib
from fashionbert_tf.data import contract
from fashionbert_tf.data import negatives_index
from fashionbert_tf.data import pipeline
from fashionbert_tf.data import prepare
from fashionbert_tf.data import records
from fashionbert_tf.data.sources import fashion_gen_hdf5 as fashiongen_hdf5
from fashionbert_tf.data.sources import fashion_gen_tfds as tfds_source
from fashionbert_tf.data.sources import fashion_gen_tfds_builder as fashion_gen_builder


@pytest.fixture(scope="module")
def tfds_config(toy_data_config, tmp_path_factory):
  """conftest's toy data (24 / 12 products, seed 3, 1 empty description) through the builder's
  toy config and prepare-data with data.source=tfds (2 shards per split)."""
  root = tmp_path_factory.mktemp("tfds_source")
  config = toy_data_config.replace(
      source="tfds", tfds_config="toy", tfds_data_dir=str(root / "tfds"),
      tfrecord_dir=str(root / "prepared"),
      candidates_file=str(root / "prepared" / "candidates.json"),
      toy_num_train_products=24, toy_num_validation_products=12, toy_seed=3,
      toy_num_empty_descriptions=1)
  info = prepare.prepare_dataset(config)
  return config, info


def _builder_hdf5(config, split):
  builder = tfds_source.get_builder(config)
  directory = os.path.join(tfds_source.data_dir(config), "downloads",
                           "fashion_gen_toy_24_12_seed3_empty1")
  assert builder.builder_config.name == "toy_24_12_seed3_empty1"
  return os.path.join(directory, fashion_gen_builder.TOY_SPLIT_FILES[split])


@pytest.mark.parametrize("split", ["train", "validation"])
def test_toy_config_round_trips_every_row_in_source_order(tfds_config, split):
  config, _ = tfds_config
  builder = tfds_source.prepared_builder(config)
  examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
  report = fashiongen_hdf5.ReadReport("")
  rows = list(fashiongen_hdf5.iterate_rows(_builder_hdf5(config, split), report=report))
  assert len(examples) == len(rows) == builder.info.splits[split].num_examples > 10
  for example, row in zip(examples, rows):
    assert example["record_id"] == row["record_id"] and example["product_id"] == row["product_id"]
    for field in fashion_gen_builder.TEXT_FEATURES:
      assert example[field].decode("utf-8") == row[field], field
    np.testing.assert_array_equal(example["image"], row["image"])       # PNG: lossless
  metadata = builder.info.metadata
  assert metadata["skipped_empty_description"][split] == report.skipped_empty_description
  assert metadata["first_skipped_rows"][split] == report.first_skipped_rows
  assert metadata["num_rows"][split] == report.num_rows
  if split == "train":
    assert report.skipped_empty_description > 0             # conftest: 1 empty product


def test_toy_records_equal_todays_tfrecords_and_candidate_sets(toy_data_config, tfds_config):
  """Same content as prepare-data's own TFRecords of the same toy data: records (the TFDS shards
  parse with records.py's schema), the candidate sets, the skipped-row counts."""
  config, info = tfds_config
  for split in records.SPLITS:
    ours = [{k: v.numpy() for k, v in r.items()} for r in records.read_records(
        pipeline.split_file_pattern(config, split), decode=False)]
    today = [{k: v.numpy() for k, v in r.items()} for r in records.read_records(
        pipeline.split_file_pattern(toy_data_config, split), decode=False)]
    assert len(ours) == len(today)
    for a, b in zip(ours, today):
      for key in records.TEXT_FEATURE_SPEC:
        assert a[key] == b[key], key
      np.testing.assert_array_equal(tf.io.decode_png(a["image"]), tf.io.decode_png(b["image"]))
  today_info = prepare.load_dataset_info(toy_data_config.tfrecord_dir)
  for split in records.SPLITS:
    for key in ("num_rows", "num_records", "num_products", "skipped_empty_description",
                "first_skipped_rows"):
      assert info["splits"][split][key] == today_info["splits"][split][key], (split, key)
  assert info["source"] == "tfds" and prepare.load_dataset_info(config.tfrecord_dir) == info
  assert (candidates_lib.load_candidates(config.candidates_file) ==
          candidates_lib.load_candidates(toy_data_config.candidates_file))
  train_index = negatives_index.index_path(info["splits"]["train"]["file_pattern"])
  validation_index = negatives_index.index_path(info["splits"]["validation"]["file_pattern"])
  assert train_index != validation_index
  assert os.path.exists(train_index) and os.path.exists(validation_index)


def test_builder_is_registered_with_full_toy_and_catalogue_configs(tmp_path):
  builder = tfds.builder("fashion_gen", config="full", data_dir=str(tmp_path))
  assert isinstance(builder, fashion_gen_builder.FashionGen)
  assert {c.name for c in fashion_gen_builder.FashionGen.BUILDER_CONFIGS} == {
      "full", "toy", "catalogue"}
  assert "fashiongen_256_256_train.h5" in builder.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert not builder.is_prepared()


def _write_real_schema(path, descriptions, drop=None, product_ids=None):
  """A small Fashion-Gen file in the real schema: one distinct, smooth image per row."""
  num_rows = len(descriptions)
  ramp = np.linspace(0, 200, 256, dtype=np.float32)
  images = np.stack([np.stack([ramp[:, None] + 0 * ramp[None, :] + 5 * i,
                               ramp[None, :] + 0 * ramp[:, None],
                               np.full((256, 256), 40.0 * i)], -1) for i in range(num_rows)])
  with h5py.File(path, "w") as handle:
    handle.create_dataset("input_image", data=images.astype(np.uint8))
    columns = {"input_description": descriptions,
               "input_name": [b"Name &amp; co"] * num_rows,
               "input_category": [b"TOPS"] * num_rows,
               "input_subcategory": [b"SHIRTS"] * num_rows,
               "input_pose": [b"id_gridfs_%d" % i for i in range(num_rows)],
               "input_brand": [b"ignored"] * num_rows}
    for name, values in columns.items():
      if name != drop:
        handle.create_dataset(name, data=np.array(values, dtype="S64")[:, None])
    handle.create_dataset("input_productID",
                          data=np.array(product_ids or range(7, 7 + num_rows))[:, None])
  return str(path)


def test_full_config_reads_the_real_schema_cleans_and_counts(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  train = _write_real_schema(manual / "fashiongen_256_256_train.h5", [
      "Caf\u00e9 cr\u00e8me shirt".encode("latin-1"),     # not UTF-8: decoded as cp1252/latin-1
      b"Red&amp;nbsp;shirt<br>with &#233;toile",
      b"  <p> </p> ",                                      # empty after cleaning: skipped
      b"Blue shirt"])
  _write_real_schema(manual / "fashiongen_256_256_validation.h5", [b"Green shirt", b"Grey"])
  builder = fashion_gen_builder.FashionGen(config="full", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual)))
  examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
  assert [e["description"].decode() for e in examples] == [
      "Caf\u00e9 cr\u00e8me shirt", "Red shirt with \u00e9toile", "Blue shirt"]
  assert [int(e["record_id"]) for e in examples] == [0, 1, 3]
  assert [int(e["product_id"]) for e in examples] == [7, 8, 10]
  assert examples[0]["name"].decode() == "Name & co"
  # `full` stores JPEG q95, the bytes prepare-data's TFRecords hold for configs/paper.yaml.
  encoded = list(tfds.as_numpy(builder.as_dataset(
      split="train", decoders={"image": tfds.decode.SkipDecoding()})))
  with h5py.File(train, "r") as handle:
    source = handle["input_image"][3]
  assert encoded[2]["image"] == records.encode_image(source, "jpeg", 95)
  assert examples[2]["image"].shape == (256, 256, 3)
  assert np.abs(examples[2]["image"].astype(int) - source).mean() < 2.0
  # The counts are stored with the dataset: a fresh builder reads them back from disk.
  reloaded = tfds.builder("fashion_gen", config="full", data_dir=str(tmp_path / "tfds"))
  assert reloaded.info.metadata["skipped_empty_description"] == {"train": 1, "validation": 0}
  assert reloaded.info.metadata["first_skipped_rows"]["train"] == [2]
  assert reloaded.info.splits["validation"].num_examples == 2


def test_full_config_missing_file_or_dataset_is_named(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  _write_real_schema(manual / "fashiongen_256_256_train.h5", [b"a shirt"], drop="input_pose")
  builder = fashion_gen_builder.FashionGen(config="full", data_dir=str(tmp_path / "tfds"))
  config = tfds.download.DownloadConfig(manual_dir=str(manual))
  with pytest.raises(fashiongen_hdf5.FashionGenFormatError,
                     match=r"fashiongen_256_256_train\.h5: missing required dataset.*input_pose"):
    builder.download_and_prepare(download_config=config)
  _write_real_schema(manual / "fashiongen_256_256_train.h5", [b"a shirt"])
  with pytest.raises(FileNotFoundError, match=r"fashiongen_256_256_validation\.h5"):
    builder.download_and_prepare(download_config=config)


def _image_hash(image):
  return hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_pipeline_batches_from_tfds_follow_the_contract(tfds_config):
  config, _ = tfds_config
  signature = contract.batch_signature(image_mode=True)
  dataset = pipeline.build_pretraining_dataset(config, "train", 8)
  assert set(dataset.element_spec) == set(signature)
  batches = [{k: v.numpy() for k, v in b.items()} for b in dataset.take(6)]
  again = [{k: v.numpy() for k, v in b.items()} for b in
           pipeline.build_pretraining_dataset(config, "train", 8).take(6)]
  known = {_image_hash(r["image"].numpy()) for r in records.read_records(
      pipeline.split_file_pattern(config, "train"))}
  for batch, same in zip(batches, again):
    for key, spec in signature.items():
      assert batch[key].dtype == spec.dtype.as_numpy_dtype, key
      assert spec.shape.is_compatible_with(batch[key].shape), key
      np.testing.assert_array_equal(batch[key], same[key])        # seeded: reproducible
    lengths = batch["input_mask"].sum(1)
    assert batch["input_word_ids"].shape[1] == lengths.max()       # padded to its own longest
    assert set(batch["tia_label"]) <= {0, 1}
    assert {_image_hash(image) for image in batch["image"]} <= known
  labels = np.concatenate([b["tia_label"] for b in batches])
  assert 0 < labels.mean() < 1
  # skip_corrupt_records reads TFDS's shard files with the per-file reader: same contract.
  skipping = pipeline.build_pretraining_dataset(config.replace(skip_corrupt_records=True),
                                                "train", 8)
  batch = next(iter(skipping))
  assert set(batch) == set(signature) and batch["image"].shape[1:] == (256, 256, 3)


@pytest.mark.parametrize("num_pipelines", [2, 3])
def test_read_config_input_context_gives_disjoint_shards(tfds_config, num_pipelines):
  """2 pipelines: TFDS gives each one of the 2 files; 3 (> files): every n-th record."""
  config, _ = tfds_config
  every = [r["image"] for r in tfds.as_numpy(tfds_source.read_split(config, "train"))]
  shards = []
  for pipeline_id in range(num_pipelines):
    context = tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                         input_pipeline_id=pipeline_id)
    shards.append([r["image"] for r in tfds.as_numpy(tfds_source.read_split(
        config, "train", shuffle=True, seed=5, input_context=context))])
  assert all(shards)
  assert sum(len(shard) for shard in shards) == len(every)
  for i in range(num_pipelines):
    for j in range(i + 1, num_pipelines):
      assert not set(shards[i]) & set(shards[j])
  assert set().union(*map(set, shards)) == set(every)
  if num_pipelines == 2:
    files = tfds_source.split_files(config, "train")
    first_file = [r["image"].numpy() for r in records.read_records(files[0], decode=False)]
    assert set(first_file) in (set(shards[0]), set(shards[1]))


def test_tfds_source_options_and_unprepared_dataset_are_clear(tfds_config, tmp_path):
  config, _ = tfds_config
  with pytest.raises(ValueError, match="data.source"):
    config.replace(source="parquet").validate()
  with pytest.raises(records.RecordFileError, match="prepare-data"):
    pipeline.build_pretraining_dataset(config.replace(tfds_data_dir=str(tmp_path)), "train", 4)
  full = config.replace(tfds_config="full", tfds_data_dir=str(tmp_path / "tfds"),
                        train_hdf5=str(tmp_path / "nothing" / "fashiongen_256_256_train.h5"))
  with pytest.raises(FileNotFoundError, match=r"nothing/fashiongen_256_256_train\.h5"):
    prepare.prepare_dataset(full)
  assert tfds_source.feature_copy_name(
      "/x/fashion_gen-validation.tfrecord-00001-of-00002") == "validation-00001-of-00002.tfrecord"
  with open(os.path.join(config.tfrecord_dir, prepare.DATASET_INFO_FILE), encoding="utf-8") as f:
    assert json.load(f)["tfds_config"] == "toy_24_12_seed3_empty1"


def test_beam_row_ranges_read_every_row_once_like_the_generator(tfds_config):
  """What each Beam task runs (`_rows_of_range` over `row_ranges`), without Beam itself (the
  Beam build is run by hand, README): together the tasks give the generator's examples."""
  config, _ = tfds_config
  path = _builder_hdf5(config, "train")
  num_rows = fashiongen_hdf5.count_rows(path)
  ranges = fashion_gen_builder.row_ranges(num_rows, rows_per_task=7)
  assert ranges[0][0] == 0 and ranges[-1][1] == num_rows
  assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
  from_tasks = [key for start, stop in reversed(ranges)       # any task order
                for key, _ in fashion_gen_builder._rows_of_range(path, start, stop, 4)]
  from_generator = [int(row["record_id"]) for row in fashiongen_hdf5.iterate_rows(path)]
  assert sorted(from_tasks) == from_generator

