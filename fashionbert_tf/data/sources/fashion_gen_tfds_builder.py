"""Fashion-Gen as a TensorFlow Datasets builder: `fashion_gen`, configs `full` and `toy`.

  tfds build fashionbert_tf/data/sources/fashion_gen_tfds_builder.py --config toy --data_dir data/tfds
  tfds build fashionbert_tf/data/sources/fashion_gen_tfds_builder.py --config full --data_dir data/tfds \
      --manual_dir data/fashiongen
  fashionbert prepare-data --config configs/toy.yaml --params_override data.source=tfds

or in Python, after importing this module (which registers the builder):

  builder = tfds.builder("fashion_gen", config="toy", data_dir="data/tfds")
  builder.download_and_prepare()
  dataset = builder.as_dataset(split="train", read_config=tfds.ReadConfig(...))

Configs:
  catalogue  a retailer's own catalogue: a CSV / JSON Lines of photo paths and texts
        (`catalogue_source.py`, docs/catalogue.md): `catalogue_config(path, ...)` (named
        `catalogue_<file stem>`: what prepare-data builds from `data.catalogue_file` with
        `data.source=tfds,data.tfds_config=catalogue`), or
        the registered `catalogue` config, which reads `catalogue.jsonl` / `catalogue.csv` from the
        manual dir (`tfds build ... --config catalogue --manual_dir <folder>`). Its first pass
        (the table only) runs where the build starts; the images are loaded by `rows_per_task`-row
        tasks, spread over Beam's workers. Rows skipped for their text or path are counted by
        reason in the metadata (`skipped_rows`); rows whose image then fails to load are the
        difference between `kept_rows` and the split's examples (prepare-data reports them as
        `image_failed`; `data.source: catalogue` counts them by reason).
  full  the real `fashiongen_256_256_{train,validation}.h5`, which the user downloads by hand into
        the manual dir (`MANUAL_DOWNLOAD_INSTRUCTIONS`; default `<data_dir>/downloads/manual/`).
  toy   the embedded, seeded toy generator (`fashion_gen.py`; 320 train / 120 validation
        products, seed 0 = the demo's defaults): its HDF5 files are generated into the download dir
        (`<data_dir>/downloads/fashion_gen_toy_<products>_seed<seed>_empty<n>/`) when missing and then read
        exactly like the real ones, so the records hold the same content as today's prepare-data
        TFRecords of the same toy files. `toy_config(...)` makes a toy config with other numbers
        (e.g. a handful of products in tests; it gets its own name, hence its own data folder).

Features (one example per usable HDF5 row):
  image        Image uint8 [256, 256, 3], encoded by `records.encode_image` exactly as prepare-data
               does: PNG (lossless) for `toy`, JPEG quality 95 for `full` (configs/paper.yaml's
               `data.image_format`; ~4x smaller for real photos)
  description  Text, cleaned (`fashion_gen_hdf5.clean_text`: encodings, markup, entities)
  name, category, subcategory, pose   Text, cleaned the same way
  product_id   int64
  record_id    int64, the row index in the source HDF5 file (also the example key)

The feature names and types are those of the project's TFRecord schema (`records.py`), and TFDS
writes a flat FeaturesDict as one `tf.train.Example` with the same keys, so TFDS's shard files are
also readable by `records.parse_record`: that is how the negatives index, the skip-corrupt-record
reader, evaluation and the patch-feature precompute tool read them (`fashion_gen_tfds.py`).

Splits `train` / `validation`, written in source row order (`disable_shuffling`: the same order as
today's TFRecords, so the fixed retrieval candidate sets drawn from it are the same).

Rows whose description is empty after cleaning are skipped and counted in the dataset's metadata
(`builder.info.metadata["skipped_empty_description"][split]`, plus `first_skipped_rows` and
`num_rows`). The counts come from a first pass over the description column only (cheap), so they
are known before any example is written and are the same with or without Beam.

The HDF5 files are streamed: `fashion_gen_hdf5.iterate_rows` reads `hdf5_chunk_size` rows at a
time. A missing file raises FileNotFoundError and a malformed one `FashionGenFormatError`, both
naming the file (and the dataset / row).

Apache Beam: when `download_and_prepare` gets Beam options or a runner (`tfds build ...
--beam_pipeline_options=runner=DirectRunner` or `DownloadConfig(beam_runner=...)`),
`_generate_examples` returns a Beam PTransform instead of a generator: `beam.Create` over row
ranges of `BEAM_ROWS_PER_TASK` rows, each range streamed and encoded by one worker. Needs the
`beam` extra (`pip install -e ".[beam]"`).
"""

import inspect
import os
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from fashionbert_tf.data.sources import catalogue_file as catalogue_source
from fashionbert_tf.data import records
from fashionbert_tf.data.sources import fashion_gen_hdf5
from fashionbert_tf.data.toy import fashion_gen

NAME = "fashion_gen"
SPLIT_FILES = {"train": "fashiongen_256_256_train.h5",
               "validation": "fashiongen_256_256_validation.h5"}
TOY_SPLIT_FILES = {"train": "fashiongen_toy_train.h5",
                   "validation": "fashiongen_toy_validation.h5"}
TEXT_FEATURES = ("description", "name", "category", "subcategory", "pose")
# Rows one Beam task streams and encodes (~20 MB of raw images read per 100 rows).
BEAM_ROWS_PER_TASK = 1024


class FashionGenConfig(tfds.core.BuilderConfig):
  """A `fashion_gen` config: the real HDF5 files (`toy=False`) or the toy generator's.

  Args:
    toy: generate the HDF5 files with `fashion_gen.make_toy_fashiongen(num_train_products,
      num_validation_products, seed=toy_seed, num_empty_descriptions=...)` instead of reading the
      manual dir.
    image_format, jpeg_quality: how `records.encode_image` encodes the stored images.
    hdf5_chunk_size: rows per HDF5 read (memory ~ chunk * 196 KB); does not change the data.
  """

  def __init__(self, *, toy=False, num_train_products=320, num_validation_products=120,
               toy_seed=0, num_empty_descriptions=2, image_format="png", jpeg_quality=95,
               hdf5_chunk_size=256, catalogue=False, catalogue_file="", image_resize="pad",
               validation_fraction=0.1, seed=42, on_bad_row="skip",
               rows_per_task=catalogue_source.ROWS_PER_TASK, **kwargs):
    super().__init__(**kwargs)
    self.toy = toy
    # A catalogue (`catalogue_source.py`): its file ("" = catalogue.jsonl / .csv in the manual
    # dir), how photos become 256x256, the seeded split of rows without one, bad-row policy.
    self.catalogue = catalogue
    self.catalogue_file = catalogue_file
    self.image_resize = image_resize
    self.validation_fraction = validation_fraction
    self.seed = seed
    self.on_bad_row = on_bad_row
    self.rows_per_task = rows_per_task   # rows one Beam task loads; does not change the data
    self.image_format = image_format
    self.jpeg_quality = jpeg_quality
    self.num_empty_descriptions = num_empty_descriptions
    self.num_train_products = num_train_products
    self.num_validation_products = num_validation_products
    self.toy_seed = toy_seed
    self.hdf5_chunk_size = hdf5_chunk_size


# Images as configs/paper.yaml and the toy config store them in TFRecords: 293,008 photos as JPEG
# q95 (~25 KB each instead of ~100 KB as PNG), the drawn toy garments lossless as PNG.
FULL = FashionGenConfig(
    name="full", image_format="jpeg", jpeg_quality=95,
    description="Fashion-Gen 256x256 (293,008 images, JPEG q95), HDF5 files in the manual dir.")
TOY = FashionGenConfig(
    name="toy", toy=True,
    description="The embedded toy Fashion-Gen (320 train / 120 validation products, seed 0).")

# A catalogue's photos are photos: JPEG q95 as for `full`.
CATALOGUE = FashionGenConfig(
    name="catalogue", catalogue=True, image_format="jpeg", jpeg_quality=95,
    description="A retailer's catalogue: catalogue.jsonl or catalogue.csv in the manual dir.")
CATALOGUE_FILES = ("catalogue.jsonl", "catalogue.csv")


def catalogue_config(catalogue_file, image_resize="pad", validation_fraction=0.1, seed=42,
                     image_format="jpeg", jpeg_quality=95, on_bad_row="skip", rows_per_task=None):
  """A catalogue config reading `catalogue_file` (module docstring), named `catalogue_<file
  stem>` (TFDS's own `catalogue` config reads the manual dir): its data folder is
  `<data_dir>/fashion_gen/catalogue_<stem>/`."""
  stem = os.path.splitext(os.path.basename(catalogue_file))[0]
  return FashionGenConfig(
      name="catalogue_" + (re.sub(r"[^A-Za-z0-9_]", "_", stem) or "file"), catalogue=True, catalogue_file=os.path.abspath(catalogue_file),
      image_resize=image_resize, validation_fraction=validation_fraction, seed=seed,
      image_format=image_format, jpeg_quality=jpeg_quality, on_bad_row=on_bad_row,
      rows_per_task=rows_per_task or catalogue_source.ROWS_PER_TASK, description=f"The catalogue {catalogue_file}.")


def catalogue_fingerprint(config, path):
  """What a prepared catalogue dataset was built from: the file (path, size, mtime) and the
  settings that change its records; a prepared dataset with another one is stale."""
  stat = os.stat(path)
  return (f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{config.image_resize}|"
          f"{config.validation_fraction}|{config.seed}|{config.image_format}|"
          f"{config.jpeg_quality}")


def _catalogue_examples(path, scan, split, config, start=None, num_rows=None, num_workers=0):
  """(key, example) of one split's rows of a catalogue (all, or `num_rows` from `start`)."""
  for row, encoded in catalogue_source.iterate_examples(
      path, scan, config.image_resize, config.image_format, config.jpeg_quality,
      config.on_bad_row, seed=config.seed, validation_fraction=config.validation_fraction,
      split=split, start=start, num_rows=num_rows, num_workers=num_workers):
    fields = catalogue_source.record_fields(row)
    example = {field: fields[field] for field in TEXT_FEATURES}
    example.update(image=encoded, product_id=int(row.product_id), record_id=int(row.index))
    yield int(row.index), example


def toy_config(num_train_products=320, num_validation_products=120, seed=0,
               num_empty_descriptions=2):
  """The `toy` config, or one named after its numbers when they differ from the defaults
  (`fashion_gen.make_toy_fashiongen`'s arguments; the demo's data are its defaults but for the
  product counts)."""
  if (num_train_products, num_validation_products, seed, num_empty_descriptions) == (
      320, 120, 0, 2):
    return TOY
  name = f"toy_{num_train_products}_{num_validation_products}_seed{seed}"
  if num_empty_descriptions != 2:
    name += f"_empty{num_empty_descriptions}"
  return FashionGenConfig(
      name=name, toy=True, num_train_products=num_train_products,
      num_validation_products=num_validation_products, toy_seed=seed,
      num_empty_descriptions=num_empty_descriptions,
      description=f"Toy Fashion-Gen: {num_train_products} train / {num_validation_products} "
                  f"validation products, seed {seed}.")


def _to_example(row, image_format, jpeg_quality):
  """A `fashion_gen_hdf5.iterate_rows` row -> (key, TFDS example dict). The image is encoded here
  with `records.encode_image` (the bytes prepare-data's TFRecords hold) and stored as is."""
  example = {field: row[field] for field in TEXT_FEATURES}
  example.update(image=records.encode_image(row["image"], image_format, jpeg_quality),
                 product_id=int(row["product_id"]), record_id=int(row["record_id"]))
  return int(row["record_id"]), example


def row_ranges(num_rows, rows_per_task=BEAM_ROWS_PER_TASK):
  """[(start, stop)] covering rows 0..num_rows-1 once, `rows_per_task` rows each (Beam tasks)."""
  return [(start, min(start + rows_per_task, num_rows))
          for start in range(0, num_rows, rows_per_task)]


def _rows_of_range(path, start, stop, chunk_size, image_format="png", jpeg_quality=95):
  """Examples of rows [start, stop) of `path` (a Beam task)."""
  for row in fashion_gen_hdf5.iterate_rows(path, chunk_size, "skip", start=start, stop=stop):
    yield _to_example(row, image_format, jpeg_quality)


class FashionGen(tfds.core.GeneratorBasedBuilder):
  """Fashion-Gen (Rostamzadeh et al., 2018) image-text pairs for FashionBERT."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: the project's cleaned text, PNG images, row ids."}
  BUILDER_CONFIGS = [FULL, TOY, CATALOGUE]
  DEFAULT_CONFIG_NAME = "toy"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Fashion-Gen is distributed by its authors after registration at https://fashion-gen.com
  (Rostamzadeh et al., 2018); it cannot be downloaded automatically. Get the 256x256 release and
  put its two HDF5 files in the manual dir (`--manual_dir`, default
  `<data_dir>/downloads/manual/`):

    fashiongen_256_256_train.h5        (260,480 rows)
    fashiongen_256_256_validation.h5   (32,528 rows)

  `fashionbert prepare-data` with `data.source=tfds` passes the folder of `data.train_hdf5` as
  the manual dir. The `toy` config needs no manual files.
  """

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._use_beam = False

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    """This file. TFDS's own lookup goes through `importlib_resources` (a backport that
    tensorflow-datasets does not install) for builders that live in a package; the plain file
    path is what it returns for an ordinary install anyway (checksums.tsv would sit beside it)."""
    return epath.Path(inspect.getfile(cls))

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(256, 256, 3),
                                         encoding_format=self.builder_config.image_format),
            **{field: tfds.features.Text() for field in TEXT_FEATURES},
            "product_id": np.int64,
            "record_id": np.int64,
        }),
        supervised_keys=None,
        homepage="https://fashion-gen.com",
        citation="""@article{rostamzadeh2018fashiongen,
  title={Fashion-Gen: The Generative Fashion Dataset and Challenge},
  author={Rostamzadeh, Negar and Hosseini, Seyedarian and Boquet, Thomas and Stokowiec, Wojciech
          and Zhang, Ying and Jauvin, Christian and Pal, Chris},
  journal={arXiv:1806.08317}, year={2018}}""",
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )

  def _download_and_prepare(self, dl_manager, download_config):
    # Beam is used exactly when the caller asked for it (options or a runner).
    self._use_beam = bool(download_config.beam_options or download_config.beam_runner)
    return super()._download_and_prepare(dl_manager, download_config)

  def _catalogue_file(self, dl_manager):
    """The catalogue config's file: its `catalogue_file`, else one in the manual dir."""
    config = self.builder_config
    if config.catalogue_file:
      return config.catalogue_file
    manual_dir = os.fspath(dl_manager.manual_dir)
    for name in CATALOGUE_FILES:
      if os.path.exists(os.path.join(manual_dir, name)):
        return os.path.join(manual_dir, name)
    raise FileNotFoundError(f"fashion_gen/catalogue: no {' or '.join(CATALOGUE_FILES)} in the "
                            f"manual dir {manual_dir} (docs/catalogue.md)")

  def _catalogue_split_generators(self, dl_manager):
    """The catalogue's pass 1 (the table), its counts into the metadata, a generator per split."""
    config = self.builder_config
    path = self._catalogue_file(dl_manager)
    scan = catalogue_source.scan_catalogue(path, config.seed, config.validation_fraction,
                                           config.on_bad_row, rows_per_task=config.rows_per_task)
    empty = [split for split in catalogue_source.SPLITS if not scan.split_rows[split]]
    if empty:   # TFDS refuses an empty split; say why in the catalogue's terms
      raise catalogue_source.CatalogueFormatError(
          f"{path}: no usable row in the {' and '.join(empty)} split (rows: {scan.num_rows}, "
          f"{scan.report.summary()}); give rows a split column or raise the validation fraction "
          f"(now {config.validation_fraction})")
    metadata = self.info.metadata
    metadata["catalogue_fingerprint"] = catalogue_fingerprint(config, path)
    for key in ("source_files", "num_rows", "skipped_empty_description", "first_skipped_rows",
                "kept_rows", "skipped_rows"):
      metadata.setdefault(key, {})
    for split in catalogue_source.SPLITS:
      skipped = scan.report.as_dict(split)
      metadata["source_files"][split] = os.path.basename(path)
      metadata["num_rows"][split] = scan.split_rows[split] + skipped["total"]
      metadata["kept_rows"][split] = scan.split_rows[split]
      metadata["skipped_rows"][split] = skipped["by_reason"]
      metadata["skipped_empty_description"][split] = skipped["by_reason"].get("empty_text", 0)
      metadata["first_skipped_rows"][split] = []
    metadata["skipped_rows"]["first_rows"] = scan.report.as_dict()["first_rows"]
    return {split: self._generate_catalogue_examples(path, scan, split)
            for split in catalogue_source.SPLITS}

  def _generate_catalogue_examples(self, path, scan, split):
    config = self.builder_config
    if not self._use_beam:
      return _catalogue_examples(path, scan, split, config)
    beam = tfds.core.lazy_imports.apache_beam
    # Each task loads its rows' images on one thread: Beam's workers are the parallelism.
    return (beam.Create(scan.task_ranges())
            | beam.Reshuffle()
            | beam.FlatMap(lambda task: _catalogue_examples(
                path, scan, split, config, start=task[0], num_rows=task[1], num_workers=1)))

  def _source_files(self, dl_manager):
    """{split: HDF5 path}: the manual dir's files (`full`) or generated toy files (`toy`)."""
    config = self.builder_config
    if not config.toy:
      manual_dir = os.fspath(dl_manager.manual_dir)
      return {split: os.path.join(manual_dir, name) for split, name in SPLIT_FILES.items()}
    directory = os.path.join(
        os.fspath(dl_manager.download_dir),
        f"fashion_gen_toy_{config.num_train_products}_{config.num_validation_products}"
        f"_seed{config.toy_seed}_empty{config.num_empty_descriptions}")
    paths = {split: os.path.join(directory, name) for split, name in TOY_SPLIT_FILES.items()}
    if not all(os.path.exists(path) for path in paths.values()):
      fashion_gen.make_toy_fashiongen(
          paths["train"], paths["validation"], num_train_products=config.num_train_products,
          num_validation_products=config.num_validation_products, seed=config.toy_seed,
          num_empty_descriptions=config.num_empty_descriptions)
    return paths

  def _split_generators(self, dl_manager):
    if self.builder_config.catalogue:
      return self._catalogue_split_generators(dl_manager)
    paths = self._source_files(dl_manager)
    chunk_size = self.builder_config.hdf5_chunk_size
    metadata = self.info.metadata
    for key in ("source_files", "num_rows", "skipped_empty_description", "first_skipped_rows"):
      metadata.setdefault(key, {})
    for split, path in paths.items():
      report = fashion_gen_hdf5.scan_descriptions(path, chunk_size)   # validates the schema
      metadata["source_files"][split] = os.path.basename(path)
      metadata["num_rows"][split] = report.num_rows
      metadata["skipped_empty_description"][split] = report.skipped_empty_description
      metadata["first_skipped_rows"][split] = report.first_skipped_rows
    return {split: self._generate_examples(path) for split, path in paths.items()}

  def _generate_examples(self, path):
    config = self.builder_config
    chunk_size, image_format, quality = (config.hdf5_chunk_size, config.image_format,
                                         config.jpeg_quality)
    if self._use_beam:
      beam = tfds.core.lazy_imports.apache_beam
      ranges = row_ranges(fashion_gen_hdf5.count_rows(path))
      return (beam.Create(ranges)
              | beam.Reshuffle()
              | beam.FlatMap(lambda bounds: _rows_of_range(path, bounds[0], bounds[1],
                                                           chunk_size, image_format, quality)))
    return (_to_example(row, image_format, quality) for row in
            fashion_gen_hdf5.iterate_rows(path, chunk_size, on_bad_description="skip"))
