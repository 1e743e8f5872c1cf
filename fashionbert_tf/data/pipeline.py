"""The tf.data pretraining pipeline: prepared TFRecords -> batches per `data/contract.py`.

Stages (all TensorFlow ops; no Python generators or py_function on the hot path):

  shard files      sorted shards of the split; with an `input_context` (multi-worker) each input
                   pipeline takes every n-th file, or every n-th record when files are too few
  shuffle          file order and a `data.shuffle_buffer` of encoded records, seeded, reshuffled
                   every epoch
  repeat           (training)
  parse + decode   `records.parse_record`: image uint8 [256, 256, 3] (or, in feature mode,
                   `patch_features` float32 [64, D] from the copies with precomputed features)
  chunk            `data.pairing_chunk_size` records, numbered (the number seeds every draw)
  pair             `pairing.pair_chunk`: each image + own text (label 1) and `negative_ratio`
                   texts of other products (label 0; `data.negative_sampling`: same subcategory
                   or any; a random record of them, so products weigh by their poses),
                   re-drawn every epoch
  tokenize         `tensorflow_text.BertTokenizer` (tokenization.py); texts longer than
                   max_text_length - 2 WordPieces lose whole words at the end (the number of such
                   product descriptions is counted and logged when the dataset is built)
  mask             whole-word MLM masking and patch masking (masking.py)
  unbatch + bucket `bucket_by_sequence_length` on the text length: a batch holds texts of one
                   length bucket and is padded to its own longest text, never to 448
  prefetch

Seeding: `data.seed` (offset by the input pipeline id) seeds the shuffles and, with the chunk
number, every stateless draw (negatives, masks), so a run's stream is reproducible regardless of
parallelism.
"""

import os

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import masking
from fashionbert_tf.data import negatives_index
from fashionbert_tf.data import pairing
from fashionbert_tf.data import prepare
from fashionbert_tf.data import records
from fashionbert_tf.data import tokenization

AUTOTUNE = tf.data.AUTOTUNE


def features_dir(data_config, split="train"):
  """Folder of the shards that carry precomputed `patch_features`.

  `data.features_tfrecord_dir` when set; else `<data.tfrecord_dir>_features` (the default output of
  tools/precompute_patch_features.py) when it holds the split's shards; else `data.tfrecord_dir`
  itself (the tool's documented alternative: point data.tfrecord_dir at its output).
  """
  if data_config.features_tfrecord_dir:
    return data_config.features_tfrecord_dir
  sibling = features_output_dir(data_config)
  if tf.io.gfile.glob(records.split_file_pattern(sibling, split)):
    return sibling
  return data_config.tfrecord_dir


def features_output_dir(data_config):
  """Where precomputed patch features are written (`fashionbert demo`,
  tools/precompute_patch_features.py): `data.features_tfrecord_dir` when set, the folder training
  then reads; else `<data.tfrecord_dir>_features`, which `features_dir` finds."""
  if data_config.features_tfrecord_dir:
    return data_config.features_tfrecord_dir
  return data_config.tfrecord_dir.rstrip("/") + "_features"


def split_file_pattern(data_config, split, image_mode=True):
  """Glob pattern of a split's shards: image shards (TFDS's shard files with `data.source: tfds`),
  or the feature copies when not image_mode."""
  if split not in records.SPLITS:
    raise ValueError(f"split must be one of {records.SPLITS}, got {split!r}")
  if image_mode and data_config.source == "tfds":
    # Lazy: importing tensorflow_datasets adds ~10% to TensorFlow's own import time (python
    # -X importtime); only data.source=tfds needs it.
    from fashionbert_tf.data.sources import fashion_gen_tfds  # pylint: disable=g-import-not-at-top
    return fashion_gen_tfds.split_file_pattern(data_config, split)
  directory = data_config.tfrecord_dir if image_mode else features_dir(data_config, split)
  return records.split_file_pattern(directory, split)


def _infer_feature_dim(files):
  for _, serialized in records.named_records(files[:1]).take(1):
    features = records.parse_patch_features(tf.io.parse_single_example(
        serialized, records.PATCH_FEATURES_SPEC)[contract.FEATURES_KEY])
    return int(features.shape[-1])
  raise records.RecordFileError(f"{files[0]}: no records")


def log_truncation(tokenizer, sampler, max_text_length):
  """Counts (and logs) the product descriptions the whole-word truncation rule will shorten."""
  truncated = 0
  descriptions = sampler.descriptions
  for start in range(0, len(descriptions), 1024):
    truncated += tokenization.count_truncated(
        tokenizer, tf.constant(descriptions[start:start + 1024]), max_text_length)
  if truncated:
    logging.warning("%d of %d product descriptions exceed %d WordPieces and will be truncated "
                    "(whole words dropped from the end) to fit max_text_length=%d", truncated,
                    len(descriptions), max_text_length - 2, max_text_length)
  else:
    logging.info("no description exceeds max_text_length=%d (%d products)", max_text_length,
                 len(descriptions))
  return truncated


def skipped_record_counter(file_pattern):
  """A `records.SkippedRecordCounter` for the files of `file_pattern`, the expected record counts
  taken from their negatives index (create it eagerly, outside a strategy's scope)."""
  index, _ = negatives_index.load_or_build(file_pattern, skip_corrupt=True)
  expected = {entry["name"]: entry["num_records"] for entry in index["files"]}
  files = records.list_record_files(file_pattern)
  with tf.init_scope():
    return records.SkippedRecordCounter(files, [expected[os.path.basename(f)] for f in files])


def build_pretraining_dataset(data_config, split, global_batch_size=None, input_context=None,
                              image_mode=True, repeat=None, shuffle=None, drop_remainder=False,
                              file_pattern=None, feature_dim=None, batch_size=None,
                              tokenizer=None, masking_enabled=True, skipped_records=None):
  """A `tf.data.Dataset` of pretraining batches exactly per `data/contract.py`.

  Args:
    data_config: a `DataConfig`.
    split: "train" or "validation".
    global_batch_size: examples per step over all replicas; divided by
      `input_context.num_replicas_in_sync` when `input_context` is given.
    input_context: a `tf.distribute.InputContext` (from `distribute_datasets_from_function`) or
      None; shards the input across input pipelines.
    image_mode: True -> batches carry `image` uint8 [B, 256, 256, 3]; False -> `patch_features`
      float32 [B, 64, D] read from the precomputed-feature shards (`features_dir`).
    repeat: repeat forever (default: True for train, False otherwise).
    shuffle: shuffle files and records (default: True for train, False otherwise).
    drop_remainder: drop partial batches (only matters without repeat).
    file_pattern: read these shards instead of the split's default ones.
    feature_dim: D in feature mode (default: read from the first record).
    batch_size: per-replica batch size, instead of global_batch_size.
    tokenizer: a `tokenization.FashionBertTokenizer` (default: built from data_config).
    masking_enabled: False -> no MLM / MPM masking and no masked_* keys (e.g. TIA evaluation on
      intact text and images); input_word_ids are then the plain `[CLS] text [SEP]`.
    skipped_records: with `data.skip_corrupt_records`, the `records.SkippedRecordCounter` of the
      split's files that counts what is skipped (default: one made here, seen by nobody).

  Returns:
    Dataset of dicts: input_word_ids, input_mask, input_type_ids int32 [B, T];
    masked_lm_positions, masked_lm_ids int32 and masked_lm_weights float32 [B, P];
    image uint8 [B, 256, 256, 3] or patch_features float32 [B, 64, D];
    masked_patch_positions int32 and masked_patch_weights float32 [B, M]; tia_label int32 [B].
    T = the batch's longest text (<= data.max_text_length), P = data.max_predictions_per_seq,
    M = ceil(64 * data.patch_mask_rate).
  """
  is_train = split == "train"
  repeat = is_train if repeat is None else repeat
  shuffle = is_train if shuffle is None else shuffle
  if batch_size is None:
    if global_batch_size is None:
      raise ValueError("give global_batch_size (or batch_size)")
    batch_size = (input_context.get_per_replica_batch_size(global_batch_size)
                  if input_context else global_batch_size)
  if batch_size < 1:
    raise ValueError(f"batch size must be >= 1, got {batch_size}")
  if not 3 <= data_config.max_text_length <= contract.MAX_TEXT_LENGTH:
    raise ValueError(f"data.max_text_length must be in [3, {contract.MAX_TEXT_LENGTH}], got "
                     f"{data_config.max_text_length}")
  explicit_pattern = file_pattern
  file_pattern = file_pattern or split_file_pattern(data_config, split, image_mode)
  files = records.list_record_files(file_pattern)
  if not image_mode and feature_dim is None:
    feature_dim = _infer_feature_dim(files)

  tokenizer = tokenizer or tokenization.build_tokenizer(data_config)
  masker = masking.WholeWordMasker.from_config(data_config, tokenizer)
  skip_corrupt = bool(data_config.skip_corrupt_records)
  sampler = pairing.NegativeSampler.from_records(
      file_pattern, data_config.negative_sampling, skip_corrupt,
      same_group_fraction=data_config.mixed_same_subcategory_fraction,
      look_alike_neighbours=data_config.look_alike_neighbours,
      look_alike_fraction=data_config.look_alike_fraction)
  if skip_corrupt and skipped_records is None:
    skipped_records = skipped_record_counter(file_pattern)
  log_truncation(tokenizer, sampler, data_config.max_text_length)

  pipeline_id = input_context.input_pipeline_id if input_context else 0
  seed = int(data_config.seed) + 1000003 * pipeline_id

  # data.source=tfds, image mode: TFDS's reader (`builder.as_dataset` + `tfds.ReadConfig`: seeded
  # file shuffle, input_context sharding). Feature mode reads the TFRecord feature copies, and
  # skip_corrupt_records needs the per-file reader below (it reads TFDS's shard files as well).
  read_with_tfds = (data_config.source == "tfds" and image_mode and not skip_corrupt and
                    explicit_pattern is None)
  if read_with_tfds:
    # Lazy: importing tensorflow_datasets adds ~10% to TensorFlow's own import time (python
    # -X importtime); only data.source=tfds needs it.
    from fashionbert_tf.data.sources import fashion_gen_tfds  # pylint: disable=g-import-not-at-top
    dataset = fashion_gen_tfds.read_split(data_config, split, shuffle, seed, input_context)
    if shuffle:
      dataset = dataset.shuffle(data_config.shuffle_buffer, seed=seed + 1,
                                reshuffle_each_iteration=True)
    if repeat:
      dataset = dataset.repeat()
    dataset = dataset.map(tf.autograph.experimental.do_not_convert(lambda record: {
        "product_id": record["product_id"], "description": record["description"],
        contract.IMAGE_KEY: records.decode_image(record["image"])}),
                          num_parallel_calls=AUTOTUNE, deterministic=True)
  else:
    dataset = _records_from_files(data_config, files, input_context, seed, image_mode,
                                  feature_dim, shuffle, repeat,
                                  skipped_records if skip_corrupt else None)
  return _examples(dataset, data_config, tokenizer, masker, sampler, seed, image_mode,
                   batch_size, drop_remainder, masking_enabled)


def _records_from_files(data_config, files, input_context, seed, image_mode, feature_dim, shuffle,
                        repeat, skipped_records):
  """The record stages over TFRecord files: shard, shuffle, read, repeat, parse + decode.

  Returns a dataset of {product_id, description, image uint8 [256, 256, 3] or patch_features
  float32 [64, D]}.
  """
  num_pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  dataset = tf.data.Dataset.from_tensor_slices(files)
  shard_records = False
  if num_pipelines > 1:
    if len(files) >= num_pipelines:
      dataset = dataset.shard(num_pipelines, pipeline_id)
    else:
      shard_records = True
      logging.warning("%d files for %d input pipelines: sharding by record (every pipeline "
                      "reads all files)", len(files), num_pipelines)
  if shuffle:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  dataset = records.named_records_from_files(
      dataset, cycle_length=min(len(files), 8), skipped_records=skipped_records)
  if shard_records:
    dataset = dataset.shard(num_pipelines, pipeline_id)
  if shuffle:
    dataset = dataset.shuffle(data_config.shuffle_buffer, seed=seed + 1,
                              reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()

  # The stage functions use no tensor-dependent Python control flow: skip AutoGraph (it would
  # spend seconds transpiling tensorflow_text at every build).
  @tf.autograph.experimental.do_not_convert
  def parse(name, serialized):
    record = records.parse_record(serialized, decode=image_mode,
                                  with_patch_features=not image_mode, feature_dim=feature_dim,
                                  example_name=name)
    visual_key = contract.IMAGE_KEY if image_mode else contract.FEATURES_KEY
    return {"product_id": record["product_id"], "description": record["description"],
            visual_key: record[visual_key]}

  return dataset.map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)


def _examples(dataset, data_config, tokenizer, masker, sampler, seed, image_mode, batch_size,
              drop_remainder, masking_enabled):
  """Records -> contract batches: chunk, pair, tokenize, mask, bucket, trim, prefetch."""
  dataset = dataset.batch(data_config.pairing_chunk_size)
  patch_mask_rate = data_config.patch_mask_rate
  negative_ratio = data_config.negative_ratio
  max_pieces = data_config.max_text_length - 2
  # The batch a chunk's examples land in, about: chunk_index * chunk size * (1 + r) / batch size.
  batches_per_chunk = data_config.pairing_chunk_size * (1 + negative_ratio) / batch_size

  @tf.autograph.experimental.do_not_convert
  def make_examples(chunk_index, chunk):
    chunk_seed = tf.stack([tf.constant(seed, tf.int64), chunk_index])
    pair_seed, mask_seed, patch_seed = [
        tf.random.experimental.stateless_fold_in(chunk_seed, i) for i in range(3)]
    look_alike_fraction = None
    if sampler.negative_sampling == "look_alike":   # random negatives before the start step
      batch_index = tf.cast(chunk_index, tf.float64) * batches_per_chunk
      look_alike_fraction = tf.where(batch_index >= data_config.look_alike_start_step,
                                     sampler.look_alike_fraction, 0.0)
    pairs = pairing.pair_chunk(chunk["product_id"], chunk["description"], sampler,
                               negative_ratio, pair_seed, look_alike_fraction)
    word_pieces, _ = tokenization.truncate_whole_words(tokenizer.tokenize(pairs["text"]),
                                                       max_pieces)
    if masking_enabled:
      examples = masker(word_pieces, mask_seed)
    else:
      examples = {"input_word_ids": tokenization.add_special_tokens(
          tf.cast(word_pieces.merge_dims(1, 2), tf.int32), tokenizer.cls_id, tokenizer.sep_id)}
    ids = examples.pop("input_word_ids")
    # Dense [E, longest in chunk] + each text's length: bucketing uses the true length, and
    # `trim` cuts each batch to its own longest text.
    examples["input_word_ids"] = ids.to_tensor(0)
    examples["text_length"] = tf.cast(ids.row_lengths(), tf.int32)
    if masking_enabled:
      num_examples = tf.shape(pairs["tia_label"])[0]
      (examples["masked_patch_positions"],
       examples["masked_patch_weights"]) = masking.mask_patches(num_examples, patch_seed,
                                                                patch_mask_rate)
    examples[contract.LABEL_KEY] = pairs["tia_label"]
    visual_key = contract.IMAGE_KEY if image_mode else contract.FEATURES_KEY
    examples[visual_key] = tf.gather(chunk[visual_key], pairs["image_index"])
    return examples

  dataset = dataset.enumerate().map(make_examples, num_parallel_calls=AUTOTUNE,
                                    deterministic=True)
  boundaries = sorted(b for b in data_config.length_bucket_boundaries
                      if 0 < b <= data_config.max_text_length)
  dataset = dataset.unbatch().bucket_by_sequence_length(
      element_length_func=tf.autograph.experimental.do_not_convert(
          lambda example: example["text_length"]),
      bucket_boundaries=[b + 1 for b in boundaries],     # bucket i: length < boundaries[i] + 1
      bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
      pad_to_bucket_boundary=False, drop_remainder=drop_remainder)

  @tf.autograph.experimental.do_not_convert
  def trim(batch):
    """Cuts the batch to its own longest text (elements came padded to their chunk's longest)."""
    lengths = batch.pop("text_length")
    longest = tf.reduce_max(lengths)
    batch["input_word_ids"] = batch["input_word_ids"][:, :longest]
    batch["input_mask"] = tf.sequence_mask(lengths, longest, dtype=tf.int32)
    batch["input_type_ids"] = tf.zeros_like(batch["input_word_ids"])
    return batch

  dataset = dataset.map(trim, num_parallel_calls=AUTOTUNE, deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  dataset = dataset.with_options(options)
  return dataset.prefetch(AUTOTUNE)


def num_examples_per_epoch(data_config, split):
  """Records in a split (from prepare-data's dataset_info.json) x (1 + negative_ratio), or None."""
  info = prepare.load_dataset_info(data_config.tfrecord_dir)
  if not info or split not in info.get("splits", {}):
    return None
  return int(np.round(info["splits"][split]["num_records"] * (1 + data_config.negative_ratio)))
