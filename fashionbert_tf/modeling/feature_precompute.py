"""Precomputed-feature mode: run the patch backbone once over TFRecord shards, store the features.

Each input shard is copied record for record, in order, into a shard of the same file name in the
output folder; every record keeps all its features and gains `patch_features` =
`tf.io.serialize_tensor(float32 [64, D])` (the record schema of `data/records.py`), the output of
the same `PatchFeatureExtractor` the model runs online (uint8 image -> 8x8 grid -> backbone), so
both modes give the same features for the same image (up to float rounding of a different batch
size).
A record that already has `patch_features` gets them replaced (the count is reported).

Shards are written to `<name>.tmp` and renamed when complete, so an interrupted run never leaves a
half-written shard under the final name.
"""

import dataclasses
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import negatives_index
from fashionbert_tf.data import records
from fashionbert_tf.modeling import feature_statistics
from fashionbert_tf.modeling import patch_features as patch_features_lib
from fashionbert_tf.utils import progress as progress_lib


def add_patch_features(serialized_example, features, dtype="float32"):
  """Returns `serialized_example` (bytes) with `patch_features` set to `features` float32 [64, D],
  stored in `dtype` (`data.patch_feature_dtype`: "float32", "float16", "bfloat16").

  Returns:
    (bytes, bool): the new serialized Example, and whether it replaced existing `patch_features`.
  """
  example = tf.train.Example.FromString(serialized_example)
  feature_map = example.features.feature
  replaced = contract.FEATURES_KEY in feature_map
  feature_map[contract.FEATURES_KEY].CopyFrom(tf.train.Feature(
      bytes_list=tf.train.BytesList(value=[records.serialize_patch_features(features, dtype)])))
  return example.SerializeToString(), replaced


def _batches(files, batch_size):
  """Dataset of (file index [b], serialized [b], image uint8 [b, 256, 256, 3]) over `files`.

  Files in the given order, records in file order; one dataset (one trace) for all shards.
  Parse errors name the record as `<file>:<index>`.
  """
  def one_file(file_index, path):
    return tf.data.TFRecordDataset(path).enumerate().map(
        lambda index, serialized: (file_index, serialized, tf.strings.join(
            [path, tf.strings.as_string(index)], separator=":")))

  def parse(file_index, serialized, name):
    image = records.parse_record(serialized, decode=True, example_name=name)["image"]
    return file_index, serialized, image

  files_dataset = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(files), dtype=tf.int64), tf.constant(files)))
  dataset = files_dataset.flat_map(one_file).map(
      parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.batch(batch_size).prefetch(2)


def count_records(path):
  """Records in one TFRecord file; a corrupt file -> `records.RecordFileError` naming it."""
  count = 0
  try:
    for _ in tf.data.TFRecordDataset(path):
      count += 1
  except tf.errors.DataLossError as error:
    raise records.RecordFileError(
        f"{path}: corrupt TFRecord file: record {count} (0-based) cannot be read "
        f"({error.message.strip()})") from None
  return count


def precompute_shards(feature_fn, input_files, output_files, batch_size=32, on_batch=None,
                      feature_dtype="float32"):
  """Copies each input shard to its output shard, adding `patch_features` to every record.

  Args:
    feature_fn: callable uint8 [b, 256, 256, 3] -> float32 [b, 64, D] (e.g. a
      `PatchFeatureExtractor` in inference mode, or `FashionBertModel.compute_patch_features`).
    input_files: the source shards.
    output_files: the shards to write, one per input (each written as `<path>.tmp`, renamed
      when complete).
    batch_size: images per backbone call.
    on_batch: optional callable(num_records_in_batch), for progress display.
    feature_dtype: how the features are stored ("float32", "float16", "bfloat16"; read back as
      float32).

  Returns:
    dict output path -> {"records": written, "replaced": records that had patch_features}.

  Raises:
    records.RecordFileError: a corrupt shard or a record that does not parse (file named).
  """
  tmp_files = [path + ".tmp" for path in output_files]
  summary = {path: {"records": 0, "replaced": 0} for path in output_files}
  writers = [tf.io.TFRecordWriter(path) for path in tmp_files]
  current = 0  # Index of the input file being read, for error messages.
  try:
    iterator = iter(_batches(list(input_files), batch_size))
    while True:
      try:
        file_indices, serialized, images = next(iterator)
      except StopIteration:
        break
      except tf.errors.DataLossError as error:
        raise records.RecordFileError(
            f"{input_files[current]}: corrupt TFRecord file after record "
            f"{summary[output_files[current]]['records']} ({error.message.strip()})") from None
      except tf.errors.InvalidArgumentError as error:
        raise records.RecordFileError(
            f"a record does not parse ({error.message.strip()})") from None
      features = np.asarray(feature_fn(images), np.float32)
      if features.ndim != 3 or features.shape[:2] != (images.shape[0], contract.NUM_PATCHES):
        raise ValueError(f"feature function returned shape {features.shape} for "
                         f"{images.shape[0]} images; expected [b, 64, D]")
      for file_index, example_bytes, example_features in zip(
          file_indices.numpy(), serialized.numpy(), features):
        current = int(file_index)
        new_bytes, replaced = add_patch_features(example_bytes, example_features, feature_dtype)
        writers[current].write(new_bytes)
        summary[output_files[current]]["records"] += 1
        summary[output_files[current]]["replaced"] += int(replaced)
      if on_batch is not None:
        on_batch(len(features))
    for writer, tmp_path, path in zip(writers, tmp_files, output_files):
      writer.close()
      os.replace(tmp_path, path)
  finally:
    for writer in writers:
      writer.close()
    for tmp_path in tmp_files:
      if os.path.exists(tmp_path):
        os.remove(tmp_path)
  return summary


def precompute_patch_features(model_config, input_pattern, output_dir, batch_size=32,
                              feature_fn=None, verbose=True, progress_interval=10.0,
                              output_name=None, feature_dtype="float32"):
  """Writes copies of every shard matching `input_pattern` into `output_dir`, with features.

  Args:
    model_config: the `ModelConfig` whose backbone computes the features (weights from
      `model.backbone_weights`); unused when `feature_fn` is given.
    input_pattern: glob (or comma-separated globs) of the source shards.
    output_dir: where the copies go (same file names); must not be the source folder.
    batch_size: images per backbone call.
    feature_fn: optional callable uint8 [b, 256, 256, 3] -> float32 [b, 64, D] replacing the
      extractor built from `model_config` (e.g. a trained model's `compute_patch_features`).
    verbose: log progress (records, records/s, ETA) every `progress_interval` seconds.
    output_name: optional callable input path -> the copy's file name (default: the same name;
      `tfds_source.feature_copy_name` for TFDS's shards).
    feature_dtype: `data.patch_feature_dtype`, how the features are stored: "float32" (4 bytes a
      value: 512 KB an image at D = 2048), "float16" or "bfloat16" (half); read back as float32.

  Returns:
    dict: output path -> {"records": n, "replaced": n}.
  """
  input_files = records.list_record_files(input_pattern)
  os.makedirs(output_dir, exist_ok=True)
  output_name = output_name or os.path.basename
  if len({output_name(path) for path in input_files}) != len(input_files):
    raise ValueError(f"input shards matching {input_pattern!r} share file names; the copies in "
                     f"{output_dir} would overwrite each other")
  for path in input_files:
    if os.path.samefile(os.path.dirname(os.path.abspath(path)), output_dir):
      raise ValueError(f"output_dir {output_dir} holds the input shard {path}; precomputed "
                       f"shards are copies and must go to another folder")
  if feature_fn is None:
    extractor = patch_features_lib.build_patch_feature_extractor(model_config)
    feature_fn = patch_features_lib.inference_feature_fn(extractor)

  total = sum(count_records(path) for path in input_files)
  progress = progress_lib.Progress(total, progress_interval, label="patch features:",
                                   unit="records")
  done = [0]

  def on_batch(count):
    done[0] += count
    if verbose:
      progress.update(count)

  start = time.time()
  output_files = [os.path.join(output_dir, output_name(path)) for path in input_files]
  summary = precompute_shards(feature_fn, input_files, output_files, batch_size, on_batch,
                              feature_dtype)
  negatives_index.write_for_copies(input_files, output_files)
  for path, output_path in zip(input_files, output_files):
    logging.info("%s: %d records -> %s (%d had patch_features, replaced)", path,
                 summary[output_path]["records"], output_path, summary[output_path]["replaced"])
  elapsed = time.time() - start
  logging.info("patch features for %d records in %d shards in %.1f s (%.1f records/s)", done[0],
               len(input_files), elapsed, done[0] / max(elapsed, 1e-9))
  return summary


def precompute_with_statistics(config, input_pattern, output_dir, batch_size=32,
                               output_name=None):
  """`precompute_patch_features`, then (`standardize` mode) the training images' statistics.

  The statistics are computed from the training features just written (`output_dir`) and saved at
  `feature_statistics.default_path`, replacing any computed from older features.

  Args:
    config: `ExperimentConfig` (its `model` picks the backbone, its `data` where statistics go).
    input_pattern, output_dir, batch_size, output_name: as for `precompute_patch_features`.

  Returns:
    (summary of `precompute_patch_features`, `FeatureStatistics` or None).
  """
  summary = precompute_patch_features(config.model, input_pattern, output_dir, batch_size,
                                     output_name=output_name,
                                     feature_dtype=config.data.patch_feature_dtype)
  if config.model.patch_feature_normalization != "standardize":
    return summary, None
  stats_config = dataclasses.replace(config)
  stats_config.data = dataclasses.replace(config.data, features_tfrecord_dir=output_dir)
  stats_config.model = dataclasses.replace(config.model, use_precomputed_features=True)
  return summary, feature_statistics.write_statistics(stats_config)
