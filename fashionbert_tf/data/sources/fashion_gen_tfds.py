"""`data.source: tfds`: the project's data through the `fashion_gen` TFDS builder.

Where things are:
  builder      `fashion_gen_tfds_builder.FashionGen`, config `data.tfds_config` ("catalogue":
               `data.catalogue_file` with `data.image_resize`, `validation_fraction`, `seed`,
               `image_format`, `on_bad_row`; rebuilt when the file or those settings change;
               "toy": the toy generator
               with `data.toy_num_train_products`, `toy_num_validation_products`, `toy_seed`,
               `toy_num_empty_descriptions`;
               "full": the real HDF5 files, manual dir = the folder of `data.train_hdf5`)
  data dir     `data.tfds_data_dir` (empty: `tfds/` beside `data.tfrecord_dir`), TFDS's layout
               `<data dir>/fashion_gen/<config>/1.0.0/fashion_gen-{split}.tfrecord-NNNNN-of-NNNNN`
               with `data.num_shards` shards per split
  prepare-data writes, as with `tfrecords`, `dataset_info.json` (record counts, skipped rows), the
               retrieval candidate sets and the negatives index; only the image records live in
               TFDS's folder instead of `data.tfrecord_dir`

Reading:
  - The pretraining pipeline's image mode reads `builder.as_dataset(split, read_config=
    tfds.ReadConfig(shuffle_seed=..., input_context=...))` (`read_split`): TFDS shuffles the files
    with the pipeline's seed and, with a `tf.distribute.InputContext`, gives each input pipeline
    its own files. Images stay encoded (`SkipDecoding`) until the pipeline's decode stage.
  - `fashionbert evaluate` (image mode) reads its record table and images through
    `builder.as_dataset` too (`read_records`).
  - Everything that reads records by file (the negatives index, `data.skip_corrupt_records`'s
    reader, the gallery, the patch-feature precompute tool) reads TFDS's shard files directly (`split_file_pattern`): TFDS writes the flat feature
    dict as a `tf.train.Example` with the keys and types of `records.py`'s schema.
  - Precomputed patch features stay a derived TFRecord dataset: the demo / the precompute tool
    copy TFDS's shards, adding `patch_features`, into `<features dir>/{split}-NNNNN-of-NNNNN
    .tfrecord` (`feature_copy_name`), which feature mode reads as before.
"""

import os
import re

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from fashionbert_tf.configs import data as data_config_lib
from fashionbert_tf.data import records
from fashionbert_tf.data.sources import fashion_gen_tfds_builder

_TFDS_SHARD = re.compile(r"[^-]+-(?P<split>\w+)\.tfrecord-(?P<index>\d{5})-of-(?P<count>\d{5})")


def data_dir(data_config):
  """`data.tfds_data_dir`, or `tfds/` beside `data.tfrecord_dir`."""
  if data_config.tfds_data_dir:
    return data_config.tfds_data_dir
  return os.path.join(os.path.dirname(os.path.abspath(data_config.tfrecord_dir)), "tfds")


def builder_config(data_config):
  data_config_lib.check_source(data_config)
  if data_config.tfds_config == "catalogue":
    return fashion_gen_tfds_builder.catalogue_config(
        data_config.catalogue_file, data_config.image_resize, data_config.validation_fraction,
        data_config.seed, data_config.image_format, data_config.jpeg_quality,
        data_config.on_bad_row)
  if data_config.tfds_config == "full":
    return fashion_gen_tfds_builder.FULL
  return fashion_gen_tfds_builder.toy_config(data_config.toy_num_train_products,
                                        data_config.toy_num_validation_products,
                                        data_config.toy_seed,
                                        data_config.toy_num_empty_descriptions)


def get_builder(data_config):
  """The `fashion_gen` builder of `data_config` (not necessarily prepared)."""
  return fashion_gen_tfds_builder.FashionGen(config=builder_config(data_config),
                                        data_dir=data_dir(data_config))


def manual_dir(data_config):
  """The folder the `full` config reads the two HDF5 files from: that of `data.train_hdf5`."""
  return os.path.dirname(os.path.abspath(data_config.train_hdf5))


def download_and_prepare(data_config, beam_runner=None, beam_options=None):
  """Builds the dataset (TFDS reuses an already prepared one). Returns the builder.

  beam_runner / beam_options: build with Apache Beam (the `beam` extra), e.g.
  `beam_pipeline_options("runner=DirectRunner,direct_num_workers=8")`.
  """
  builder = get_builder(data_config)
  config = builder.builder_config
  if config.catalogue and builder.is_prepared():
    if not os.path.isfile(config.catalogue_file):
      raise FileNotFoundError(f"catalogue file not found: {config.catalogue_file} "
                              "(data.catalogue_file)")
    built_from = builder.info.metadata.get("catalogue_fingerprint")
    if built_from != fashion_gen_tfds_builder.catalogue_fingerprint(config, config.catalogue_file):
      logging.info("TFDS fashion_gen/%s in %s was built from %s; rebuilding it from %s",
                   config.name, builder.data_dir, built_from, config.catalogue_file)
      tf.io.gfile.rmtree(os.fspath(builder.data_dir))
      builder = get_builder(data_config)
  if not config.toy and not config.catalogue and not builder.is_prepared():
    for name in fashion_gen_tfds_builder.SPLIT_FILES.values():
      path = os.path.join(manual_dir(data_config), name)
      if not os.path.exists(path):
        raise FileNotFoundError(
            f"Fashion-Gen HDF5 file not found: {path} (the fashion_gen `full` config reads "
            f"fashiongen_256_256_{{train,validation}}.h5 from the folder of data.train_hdf5; "
            "see data/README.md for where to get them)")
  download_config = tfds.download.DownloadConfig(
      num_shards=data_config.num_shards, manual_dir=manual_dir(data_config),
      beam_runner=beam_runner, beam_options=beam_options)
  builder.download_and_prepare(download_config=download_config)
  return builder


def beam_pipeline_options(text):
  """"key=value,key=value" (as `tfds build --beam_pipeline_options` takes them) -> Beam's
  `PipelineOptions`; empty -> None."""
  if not text:
    return None
  beam = tfds.core.lazy_imports.apache_beam
  return beam.options.pipeline_options.PipelineOptions(
      flags=[f"--{option.strip()}" for option in text.split(",") if option.strip()])


def prepared_builder(data_config):
  """The builder, which must have been prepared (else `RecordFileError` saying how)."""
  builder = get_builder(data_config)
  if not builder.is_prepared():
    raise records.RecordFileError(
        f"TFDS dataset fashion_gen/{builder.builder_config.name} is not prepared in "
        f"{data_dir(data_config)}; run `fashionbert prepare-data` with data.source=tfds first")
  return builder


def split_files(data_config, split):
  """Sorted paths of a split's TFDS shard files."""
  builder = prepared_builder(data_config)
  return sorted(os.fspath(path) for path in builder.info.splits[split].filepaths)


def split_file_pattern(data_config, split):
  """Glob of a split's TFDS shard files (readable by `records.py`, see the module docstring)."""
  builder = prepared_builder(data_config)
  return os.path.join(os.fspath(builder.data_dir),
                      f"{fashion_gen_tfds_builder.NAME}-{split}.tfrecord-?????-of-?????")


def feature_source_pattern(data_config):
  """Both splits' TFDS shard globs (comma-separated): what the patch-feature copies are made of."""
  return ",".join(split_file_pattern(data_config, split) for split in records.SPLITS)


def feature_copy_name(path):
  """TFDS shard `<name>-{split}.tfrecord-NNNNN-of-NNNNN` -> its patch-feature copy's name
  `{split}-NNNNN-of-NNNNN.tfrecord` (the names feature mode reads)."""
  match = _TFDS_SHARD.fullmatch(os.path.basename(path))
  if not match:
    raise ValueError(f"{path} is not a TFDS shard file name (<name>-<split>.tfrecord-NNNNN-of-"
                     "NNNNN)")
  return f"{match['split']}-{match['index']}-of-{match['count']}.tfrecord"


def read_split(data_config, split, shuffle=False, seed=None, input_context=None):
  """`builder.as_dataset(split)` for the pipeline: TFDS's feature dicts (among them product_id
  int64 [], description string [], image string [] still encoded; the pipeline's decode stage
  picks those three).

  Args:
    shuffle: shuffle the file order (seeded by `seed`; reshuffled every epoch).
    input_context: a `tf.distribute.InputContext`: TFDS gives each input pipeline every n-th
      file. With fewer files than input pipelines TFDS cannot do that; then every pipeline reads
      all files and keeps every n-th record (the tfrecords source's fallback too).
  """
  builder = prepared_builder(data_config)
  num_files = len(builder.info.splits[split].filepaths)
  num_pipelines = input_context.num_input_pipelines if input_context else 1
  shard_records = num_pipelines > 1 and num_files < num_pipelines
  read_config = tfds.ReadConfig(
      shuffle_seed=seed if shuffle else None,
      shuffle_reshuffle_each_iteration=True if shuffle else None,
      input_context=None if shard_records else input_context,
      interleave_cycle_length=min(num_files, 8), interleave_block_length=1,
      # The dataset is written in source order (`disable_shuffling`, for the candidate sets);
      # the training stream deliberately shuffles and interleaves its files.
      enable_ordering_guard=False, try_autocache=False)
  dataset = builder.as_dataset(
      split=split, shuffle_files=shuffle, read_config=read_config,
      decoders={"image": tfds.decode.SkipDecoding()})
  if shard_records:
    dataset = dataset.shard(num_pipelines, input_context.input_pipeline_id)
  return dataset


def read_records(data_config, split):
  """`builder.as_dataset(split)` in source order, images still encoded: record dicts like
  `records.read_records(..., decode=False)` (record_id, product_id, description, name, category,
  subcategory, pose, image). What `fashionbert evaluate` reads with `data.source: tfds`."""
  builder = prepared_builder(data_config)
  return builder.as_dataset(split=split, shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False),
                            decoders={"image": tfds.decode.SkipDecoding()})
