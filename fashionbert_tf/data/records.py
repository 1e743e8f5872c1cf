"""The TFRecord schema of prepared Fashion-Gen: write, parse, read, verify.

One `tf.train.Example` per Fashion-Gen row:

  record_id       int64   row index in the source HDF5 file
  image           bytes   the 256x256x3 image, encoded (PNG or JPEG, `data.image_format`)
  description     bytes   UTF-8, cleaned (see `fashion_gen_hdf5.clean_text`)
  name            bytes   UTF-8, cleaned
  product_id      int64
  category        bytes   UTF-8
  subcategory     bytes   UTF-8
  pose            bytes   UTF-8
  patch_features  bytes   optional: `tf.io.serialize_tensor([64, D])` in float32, float16 or
                          bfloat16 (`data.patch_feature_dtype`: half the size), written by
                          tools/precompute_patch_features.py into copies of the shards; read
                          back as float32 whatever the stored dtype (the TensorProto names it).

Shards are named `{split}-NNNNN-of-NNNNN.tfrecord` (`shard_path`).

Errors: parsing goes through `tf.io.parse_example(..., example_names=...)` with names
`<file>:<record index>` where the caller knows them. A corrupt file (bad CRC, truncated) makes
TensorFlow's reader raise `DataLossError` without the file name; `verify_records` and
`iterate_parsed_batches` read file by file and re-raise it as `RecordFileError` naming the file and
the record index where reading stopped.
"""

import glob
import os

from absl import logging

import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract

STRING_FIELDS = ("description", "name", "category", "subcategory", "pose")
INT_FIELDS = ("record_id", "product_id")
TEXT_FEATURE_SPEC = {
    **{field: tf.io.FixedLenFeature([], tf.string) for field in STRING_FIELDS},
    **{field: tf.io.FixedLenFeature([], tf.int64) for field in INT_FIELDS},
}
FEATURE_SPEC = {**TEXT_FEATURE_SPEC, "image": tf.io.FixedLenFeature([], tf.string)}
PATCH_FEATURES_SPEC = {contract.FEATURES_KEY: tf.io.FixedLenFeature([], tf.string)}
SPLITS = ("train", "validation")


class RecordFileError(ValueError):
  """A TFRecord file is missing, corrupt, or holds a record that does not fit the schema."""


# ---- writing -------------------------------------------------------------------------------------

def _bytes_feature(value):
  if isinstance(value, str):
    value = value.encode("utf-8")
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_image(image, image_format="png", jpeg_quality=95):
  """uint8 [256, 256, 3] numpy -> encoded bytes (PNG: lossless; JPEG: ~8x smaller)."""
  image = tf.convert_to_tensor(image, tf.uint8)
  if image_format == "png":
    return tf.io.encode_png(image).numpy()
  if image_format == "jpeg":
    return tf.io.encode_jpeg(image, quality=jpeg_quality).numpy()
  raise ValueError(f"data.image_format must be 'png' or 'jpeg', got {image_format!r}")


def make_example(record, image_bytes, patch_features=None, patch_feature_dtype="float32"):
  """A `tf.train.Example` for one row.

  Args:
    record: dict with record_id, product_id (ints) and description, name, category, subcategory,
      pose (str), as yielded by `fashion_gen_hdf5.iterate_rows`.
    image_bytes: the encoded image.
    patch_features: optional float32 [64, D] numpy array.
    patch_feature_dtype: how `patch_features` is stored ("float32", "float16", "bfloat16").
  """
  feature = {field: _bytes_feature(record[field]) for field in STRING_FIELDS}
  feature.update({field: _int_feature(record[field]) for field in INT_FIELDS})
  feature["image"] = _bytes_feature(image_bytes)
  if patch_features is not None:
    feature[contract.FEATURES_KEY] = _bytes_feature(
        serialize_patch_features(patch_features, patch_feature_dtype))
  return tf.train.Example(features=tf.train.Features(feature=feature))


# Stored dtypes of `patch_features` and the bytes a serialized TensorProto of each starts with
# (field 1, `dtype`, a varint: DT_FLOAT = 1, DT_BFLOAT16 = 14, DT_HALF = 19); protobuf writes fields
# in number order, so the reader tells the dtype from the first two bytes without a schema change.
PATCH_FEATURE_DTYPES = {"float32": (tf.float32, b"\x08\x01"),
                        "float16": (tf.float16, b"\x08\x13"),
                        "bfloat16": (tf.bfloat16, b"\x08\x0e")}


def serialize_patch_features(patch_features, dtype="float32"):
  """float32 [64, D] -> bytes (`tf.io.serialize_tensor` in `dtype`), the `patch_features` feature.

  dtype: "float32", or "float16" / "bfloat16" (half the bytes; float16 keeps 11 significant bits
  and overflows above 65504, bfloat16 keeps 8 bits and float32's range).
  """
  if dtype not in PATCH_FEATURE_DTYPES:
    raise ValueError(f"data.patch_feature_dtype = {dtype!r}; expected one of "
                     f"{tuple(PATCH_FEATURE_DTYPES)}")
  patch_features = tf.convert_to_tensor(patch_features, tf.float32)
  if patch_features.shape.rank != 2 or patch_features.shape[0] != contract.NUM_PATCHES:
    raise ValueError(f"patch_features must be float32 [{contract.NUM_PATCHES}, D], "
                     f"got {patch_features.shape}")
  stored = tf.cast(patch_features, PATCH_FEATURE_DTYPES[dtype][0])
  if dtype == "float16" and not bool(tf.reduce_all(tf.math.is_finite(stored))):
    raise ValueError("patch features exceed float16's range (|x| > 65504); store them as "
                     "float32 or bfloat16 (data.patch_feature_dtype)")
  return tf.io.serialize_tensor(stored).numpy()


def shard_path(directory, split, index, num_shards):
  return os.path.join(directory, f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord")


def split_file_pattern(directory, split):
  """Glob pattern of one split's shards in `directory`."""
  return os.path.join(directory, f"{split}-?????-of-?????.tfrecord")


# ---- parsing -------------------------------------------------------------------------------------

def decode_image(encoded):
  """Encoded PNG/JPEG bytes (scalar string) -> uint8 [256, 256, 3]; wrong size is an error."""
  image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
  checks = [tf.debugging.assert_equal(
      tf.shape(image)[:2], [contract.IMAGE_SIZE, contract.IMAGE_SIZE],
      message=f"record image is not {contract.IMAGE_SIZE}x{contract.IMAGE_SIZE}")]
  with tf.control_dependencies(checks):
    image = tf.identity(image)
  image.set_shape([contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3])
  return image


def parse_patch_features(serialized_features, feature_dim=None):
  """bytes of `tf.io.serialize_tensor([64, D])` (float32, float16 or bfloat16) -> float32 [64, D].

  The stored dtype is read from the serialized TensorProto (see `PATCH_FEATURE_DTYPES`), so one
  reader serves every store; anything else fails in `parse_tensor` naming the float32 it expected.
  """
  header = tf.strings.substr(serialized_features, 0, 2)
  float16, bfloat16 = PATCH_FEATURE_DTYPES["float16"], PATCH_FEATURE_DTYPES["bfloat16"]

  def parse_as(dtype):
    return lambda: tf.cast(tf.io.parse_tensor(serialized_features, dtype), tf.float32)

  features = tf.case([(tf.equal(header, float16[1]), parse_as(float16[0])),
                      (tf.equal(header, bfloat16[1]), parse_as(bfloat16[0]))],
                     default=parse_as(tf.float32), exclusive=True)
  features = tf.ensure_shape(features, [contract.NUM_PATCHES, feature_dim])
  return features


def parse_record(serialized, decode=True, with_patch_features=False, feature_dim=None,
                 example_name=None):
  """One serialized Example -> dict of its fields (scalars; `image` uint8 [256, 256, 3]).

  Args:
    serialized: scalar string tensor.
    decode: decode `image` (else it stays the encoded bytes).
    with_patch_features: also parse `patch_features` -> float32 [64, D] (required then).
    feature_dim: D, for the static shape of `patch_features`.
    example_name: optional scalar string naming the record (`file:index`) in parse errors.
  """
  spec = dict(FEATURE_SPEC)
  if with_patch_features:
    spec.update(PATCH_FEATURES_SPEC)
  names = None if example_name is None else tf.reshape(example_name, [1])
  parsed = tf.io.parse_example(tf.reshape(serialized, [1]), spec, example_names=names)
  parsed = {key: value[0] for key, value in parsed.items()}
  if decode:
    parsed["image"] = decode_image(parsed["image"])
  if with_patch_features:
    parsed[contract.FEATURES_KEY] = parse_patch_features(parsed[contract.FEATURES_KEY],
                                                         feature_dim)
  return parsed


# ---- reading -------------------------------------------------------------------------------------

def list_record_files(file_pattern):
  """Sorted files matching a glob pattern (or comma-separated patterns); none is an error."""
  files = []
  for pattern in str(file_pattern).split(","):
    files.extend(glob.glob(pattern.strip()))
  files = sorted(set(files))
  if not files:
    raise RecordFileError(
        f"no TFRecord files match {file_pattern!r}; run `fashionbert prepare-data` first")
  return files


@tf.autograph.experimental.do_not_convert
def _named_file_records(path):
  records = tf.data.TFRecordDataset(path).enumerate()
  return records.map(tf.autograph.experimental.do_not_convert(lambda index, serialized: (
      tf.strings.join([path, tf.strings.as_string(index)], separator=":"), serialized)))


class SkippedRecordCounter:
  """Per file, the records a pipeline could not read (`data.skip_corrupt_records: true`).

  TensorFlow's TFRecord reader cannot find the next record after a corrupt one, so a file is read
  up to its first unreadable record and the rest of it is skipped: `expected - read` records, the
  expected count coming from the negatives index. The counts live in a variable the input
  pipeline adds to (create the counter eagerly, outside any distribution strategy's scope); they
  grow every epoch that meets the file again.
  """

  def __init__(self, files, expected_counts):
    self.files = list(files)
    self.expected = np.asarray(expected_counts, np.int64)
    self.counts = tf.Variable(tf.zeros([len(self.files)], tf.int64), trainable=False,
                              name="skipped_records")
    self._reported = np.zeros(len(self.files), np.int64)

  def totals(self):
    """{file: records skipped so far} for the files with any."""
    counts = self.counts.numpy()
    return {path: int(n) for path, n in zip(self.files, counts) if n}

  def new_skips(self):
    """{file: records skipped since the previous call} for the files with any."""
    counts = self.counts.numpy()
    new = {path: int(n) for path, n in zip(self.files, counts - self._reported) if n}
    self._reported = counts
    return new

  def file_records(self, path):
    """(example_name, serialized) of `path` up to its first unreadable record; the skipped rest
    is added to the counts when the file's pass ends."""
    files = tf.constant(self.files)
    file_index = tf.argmax(tf.cast(tf.equal(files, path), tf.int32), output_type=tf.int64)
    expected = tf.gather(tf.constant(self.expected), file_index)
    read = tf.data.TFRecordDataset(path).enumerate().ignore_errors()
    end = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), tf.constant(b"")))

    def count(num_read, element):
      index, serialized = element
      num_read = tf.where(index >= 0, index + 1, num_read)
      return num_read, (index, num_read, serialized)

    def account(index, num_read, serialized):
      at_end = index < 0
      lost = tf.where(at_end, tf.maximum(expected - num_read, 0), tf.constant(0, tf.int64))
      update = self.counts.assign_add(tf.one_hot(file_index, len(self.files), dtype=tf.int64) *
                                      lost)
      with tf.control_dependencies([update]):
        return tf.identity(index), serialized

    return (read.concatenate(end).scan(tf.constant(0, tf.int64), count)
            .map(tf.autograph.experimental.do_not_convert(account))
            .filter(tf.autograph.experimental.do_not_convert(lambda index, _: index >= 0))
            .map(tf.autograph.experimental.do_not_convert(lambda index, serialized: (
                tf.strings.join([path, tf.strings.as_string(index)], separator=":"),
                serialized))))


def named_records_from_files(files_dataset, cycle_length=1, skipped_records=None):
  """Dataset of file names -> dataset of (example_name `file:index`, serialized record).

  cycle_length > 1 interleaves that many files (deterministically, in parallel).
  skipped_records: a `SkippedRecordCounter` -> each file is read up to its first unreadable
  record, the rest counted there (else a corrupt file raises DataLossError).
  """
  file_records = _named_file_records
  if skipped_records is not None:
    file_records = tf.autograph.experimental.do_not_convert(skipped_records.file_records)
  if cycle_length <= 1:
    return files_dataset.flat_map(file_records)
  return files_dataset.interleave(file_records, cycle_length=cycle_length,
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def named_records(files):
  """Dataset of (example_name `file:index`, serialized) over `files` in order."""
  return named_records_from_files(tf.data.Dataset.from_tensor_slices(files))


def read_records(file_pattern, decode=True, with_patch_features=False, feature_dim=None,
                 num_parallel_calls=tf.data.AUTOTUNE):
  """Dataset of parsed record dicts (see `parse_record`), files in sorted order, deterministic.

  Parse errors name the file and record index. A corrupt file raises TensorFlow's DataLossError
  when iterated; call `verify_records(file_pattern)` first for an error that names the file.
  """
  files = list_record_files(file_pattern)
  return named_records(files).map(
      tf.autograph.experimental.do_not_convert(lambda name, serialized: parse_record(serialized, decode, with_patch_features,
                                            feature_dim, example_name=name)),
      num_parallel_calls=num_parallel_calls, deterministic=True)


def _count_readable(path):
  """Number of records of `path` that read before its first corrupt one (error path only)."""
  count = 0
  try:
    for _ in tf.data.TFRecordDataset(path):
      count += 1
  except tf.errors.DataLossError:
    pass
  return count


def corrupt_files(file_pattern):
  """[(file, index of its first unreadable record)] of the files matching `file_pattern` that
  cannot be read to the end (bad CRC, truncated): the diagnosis after a bare DataLossError."""
  found = []
  for path in list_record_files(file_pattern):
    try:
      for _ in tf.data.TFRecordDataset(path, buffer_size=1 << 20).batch(1024):
        pass
    except tf.errors.DataLossError:
      found.append((path, _count_readable(path)))
  return found


def data_loss_error(file_pattern, error, where=""):
  """A `RecordFileError` naming the corrupt file(s) behind TensorFlow's DataLossError `error`
  raised while reading `file_pattern` (None when every file now reads: re-raise `error` then)."""
  found = corrupt_files(file_pattern)
  if not found:
    return None
  files = "; ".join(f"{path}: record {index} (0-based) cannot be read" for path, index in found)
  return RecordFileError(f"corrupt TFRecord file{'s' if len(found) > 1 else ''}{where}: {files} "
                         f"({error.message.strip()}); re-run `fashionbert prepare-data` for it, or set "
                         "data.skip_corrupt_records=true to skip the unreadable rest of a file")


def iterate_parsed_batches(file_pattern, feature_spec=None, batch_size=512, unreadable=None):
  """Eagerly yields (file, index of the batch's first record in the file, dict of numpy arrays).

  Used for one-off scans (the negatives table of the pipeline, verification). Errors name the
  file and record: a corrupt file -> `RecordFileError("<file>: corrupt TFRecord file: record N
  cannot be read ...")`; a record that does not fit the schema -> `RecordFileError` with `<file>:<index>`.
  unreadable: a dict -> a corrupt file is read up to its first unreadable record instead (with a
  warning) and `unreadable[file]` = that record's index.
  """
  feature_spec = feature_spec or TEXT_FEATURE_SPEC
  for path in list_record_files(file_pattern):
    num_read = 0
    dataset = tf.data.TFRecordDataset(path).batch(batch_size)
    iterator = iter(dataset)
    last = False
    while not last:
      try:
        serialized = next(iterator)
      except StopIteration:
        break
      except tf.errors.DataLossError as error:
        last = True
        if unreadable is not None:
          unreadable[path] = _count_readable(path)
          logging.warning("%s: record %d cannot be read (%s): the rest of the file is skipped "
                          "(data.skip_corrupt_records)", path, unreadable[path],
                          error.message.strip())
          if unreadable[path] > num_read:   # the readable records of the failed batch
            serialized = next(iter(tf.data.TFRecordDataset(path).skip(num_read).take(
                unreadable[path] - num_read).batch(batch_size)))
          else:
            break
        else:
          raise RecordFileError(
            f"{path}: corrupt TFRecord file: record {_count_readable(path)} (0-based) cannot be "
            f"read ({error.message.strip()}); re-run `fashionbert prepare-data` (or set "
            "data.skip_corrupt_records=true)") from None
      names = tf.constant([f"{path}:{num_read + i}" for i in range(int(serialized.shape[0]))])
      try:
        parsed = tf.io.parse_example(serialized, feature_spec, example_names=names)
      except tf.errors.InvalidArgumentError as error:
        raise RecordFileError(
            f"{path}: a record in {num_read}..{num_read + len(names) - 1} does not fit the "
            f"FashionBERT TFRecord schema: {error.message.strip()}") from None
      yield path, num_read, {key: value.numpy() for key, value in parsed.items()}
      num_read += int(serialized.shape[0])


def verify_records(file_pattern, check_images=False):
  """Reads every record of every matching file; returns the count or raises `RecordFileError`.

  Args:
    check_images: also decode every image and check it is 256x256x3 (slower).
  """
  spec = FEATURE_SPEC if check_images else TEXT_FEATURE_SPEC
  total = 0
  for path, first, batch in iterate_parsed_batches(file_pattern, spec):
    if check_images:
      for i, encoded in enumerate(batch["image"]):
        try:
          shape = tf.io.decode_image(encoded, channels=3, expand_animations=False).shape
        except tf.errors.InvalidArgumentError as error:
          raise RecordFileError(f"{path}:{first + i}: image does not decode "
                                f"({error.message.strip()})") from None
        if tuple(shape) != (contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3):
          raise RecordFileError(f"{path}:{first + i}: image has shape {tuple(shape)}")
    total += len(batch["record_id"])
  return total


def to_python(batch, index):
  """Row `index` of a numpy batch from `iterate_parsed_batches` with strings decoded."""
  row = {}
  for key, values in batch.items():
    value = values[index]
    row[key] = value.decode("utf-8") if isinstance(value, bytes) else (
        int(value) if isinstance(value, np.integer) else value)
  return row
