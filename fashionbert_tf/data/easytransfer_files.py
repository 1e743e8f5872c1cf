"""The authors' data files (EasyTransfer FashionBERT): their evaluation files and training sample.

Format (what their `BundleCSVReader` reads): one example a line, the fields of an input schema
`name:type:length,...` in order, separated by tabs; a field of length > 1 holds its values
separated by commas; `str` fields are raw text (no quoting). A file list (`*.list_csv`) names one
file a line. Their two schemas (scripts/fashion_bert/README.md):

  EVAL_SCHEMA   image_feature:float:131072 (64 patches x 2048, row-major), image_mask:int:64,
                input_ids:int:64, input_mask:int:64, segment_ids:int:64, nx_sent_labels:int:1
                (1 = the pair matches), prod_desc:str:1, text_prod_id:str:1, image_prod_id:str:1,
                prod_img_id:str:1
  TRAIN_SCHEMA  image_feature, image_mask, masked_patch_positions:int:5, input_ids, input_mask,
                segment_ids, masked_lm_positions:int:10, masked_lm_ids:int:10,
                masked_lm_weights:float:10, nx_sent_labels:int:1

Their texts are already WordPiece ids (64 positions, `[CLS] ... [SEP]`, 0-padded) and their
images precomputed ResNet-50 patch features, so no tokenizer and no backbone runs on them.

Training sample -> `fashionbert pretrain`: `training_dataset` is a data source, not a converter
to our records: our records hold images and descriptions, theirs hold neither (only ids and
features), so they become batches of our batch contract directly (`contract.py`): input_ids ->
input_word_ids, segment_ids -> input_type_ids, image_feature -> patch_features [64, D], their
masked_* positions / ids / weights as they are (their masks are fixed in the file: the same
positions every epoch, unlike our pipeline's), nx_sent_labels -> tia_label.
"""

import dataclasses
import glob
import os
import warnings

import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract

EVAL_SCHEMA = ("image_feature:float:131072,image_mask:int:64,input_ids:int:64,input_mask:int:64,"
               "segment_ids:int:64,nx_sent_labels:int:1,prod_desc:str:1,text_prod_id:str:1,"
               "image_prod_id:str:1,prod_img_id:str:1")
TRAIN_SCHEMA = ("image_feature:float:131072,image_mask:int:64,masked_patch_positions:int:5,"
                "input_ids:int:64,input_mask:int:64,segment_ids:int:64,"
                "masked_lm_positions:int:10,masked_lm_ids:int:10,masked_lm_weights:float:10,"
                "nx_sent_labels:int:1")
LINE_SIZE_KEY = "_line_size"
_DTYPES = {"int": np.int32, "float": np.float32, "str": None}
EVAL_FIELDS = ("image_feature", "image_mask", "input_ids", "input_mask", "segment_ids",
                "nx_sent_labels", "text_prod_id", "image_prod_id")
TRAIN_FIELDS = ("image_feature", "image_mask", "masked_patch_positions", "input_ids",
                 "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                 "masked_lm_weights", "nx_sent_labels")


class EasyTransferFileError(ValueError):
  """A line of an authors' data file does not follow its schema (the message names file + line)."""


@dataclasses.dataclass(frozen=True)
class Field:
  name: str
  kind: str    # int | float | str
  length: int


def parse_schema(schema):
  """`name:type:length,...` -> [Field]. Raises ValueError naming the bad entry."""
  fields = []
  for entry in schema.split(","):
    parts = entry.strip().split(":")
    if len(parts) != 3 or parts[1] not in _DTYPES or not parts[2].isdigit() or not parts[0]:
      raise ValueError(f"input schema entry {entry!r}: expected name:int|float|str:length")
    fields.append(Field(parts[0], parts[1], int(parts[2])))
  names = [f.name for f in fields]
  if len(set(names)) != len(names):
    raise ValueError(f"input schema names a field twice: {schema}")
  return fields


def check_schema(fields, required, schema_name):
  missing = [name for name in required if name not in {f.name for f in fields}]
  if missing:
    raise ValueError(f"{schema_name} lacks the field(s) {', '.join(missing)}")
  by_name = {f.name: f for f in fields}
  length = by_name["image_feature"].length
  if length % contract.NUM_PATCHES:
    raise ValueError(f"image_feature:{length} is not {contract.NUM_PATCHES} patches x D")
  if by_name["image_mask"].length != contract.NUM_PATCHES:
    raise ValueError(f"image_mask:{by_name['image_mask'].length}: expected "
                     f"{contract.NUM_PATCHES} patches")
  return length // contract.NUM_PATCHES


def expand_paths(spec):
  """Files named by `spec`: comma-separated paths / globs, each may be a `.list_csv` file list.

  Raises:
    FileNotFoundError: a name that matches no file, or an empty result.
  """
  paths = []
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
    if not matches or not all(os.path.isfile(m) for m in matches):
      raise FileNotFoundError(f"no file {item!r} (authors' data file, glob or .list_csv)")
    for match in matches:
      if match.endswith(".list_csv"):
        with open(match, encoding="utf-8") as f:
          listed = [line.strip() for line in f if line.strip() and not line.strip().isdigit()]
        for path in listed:
          if not os.path.isfile(path):
            raise FileNotFoundError(f"{match} lists {path!r}, which does not exist")
        paths.extend(listed)
      else:
        paths.append(match)
  if not paths:
    raise FileNotFoundError(f"no authors' data files in {spec!r}")
  return paths


def _parse_line(line, fields, path, line_number):
  values = line.rstrip("\r\n").split("\t")
  if len(values) != len(fields):
    raise EasyTransferFileError(
        f"{path}:{line_number}: {len(values)} tab-separated fields, the schema has "
        f"{len(fields)} ({', '.join(f.name for f in fields)})")
  record = {}
  for field, text in zip(fields, values):
    if field.kind == "str":
      record[field.name] = text
      continue
    try:
      with warnings.catch_warnings():  # numpy warns (not raises) on text it cannot read to its end
        warnings.simplefilter("error", DeprecationWarning)
        array = np.fromstring(text, dtype=np.float64 if field.kind == "float" else np.int64,
                              sep=",")
    except (ValueError, DeprecationWarning):
      raise EasyTransferFileError(
          f"{path}:{line_number}: field {field.name} is not {field.length} comma-separated "
          f"{field.kind}s") from None
    if array.shape[0] != field.length:
      raise EasyTransferFileError(
          f"{path}:{line_number}: field {field.name} has {array.shape[0]} values, the schema "
          f"says {field.length}")
    if field.kind == "float" and not np.all(np.isfinite(array)):
      raise EasyTransferFileError(f"{path}:{line_number}: field {field.name} has NaN / Inf")
    record[field.name] = array.astype(_DTYPES[field.kind])
  return record


def read_records(paths, schema=EVAL_SCHEMA):
  """Yields (path, line number, record dict) for every line of `paths`, in order.

  Records hold numpy arrays (int32 / float32) for numeric fields and str for text fields, and
  `LINE_SIZE_KEY`: the line's length in characters (= bytes for their ASCII files; progress).

  Raises:
    EasyTransferFileError: a line that does not follow the schema (file and line named).
  """
  fields = parse_schema(schema)
  for path in paths:
    with open(path, encoding="utf-8") as f:
      for line_number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        record = _parse_line(line, fields, path, line_number)
        record[LINE_SIZE_KEY] = len(line)
        yield path, line_number, record


def model_inputs(records, feature_dim):
  """A batch dict for the model (batch contract keys) from a list of their records.

  Raises:
    EasyTransferFileError: an image_mask that is not all ones (the model attends to all 64
      patches, as their README says every image is: "image_mask are 1").
  """
  for path, line_number, record in records:
    if not np.all(record["image_mask"] == 1):
      raise EasyTransferFileError(f"{path}:{line_number}: image_mask is not all ones; this model "
                                  "attends to all 64 patches")
  def stack(key):
    return np.stack([r[key] for _, _, r in records])
  return {
      "input_word_ids": stack("input_ids").astype(np.int32),
      "input_mask": stack("input_mask").astype(np.int32),
      "input_type_ids": stack("segment_ids").astype(np.int32),
      contract.FEATURES_KEY: stack("image_feature").reshape(
          -1, contract.NUM_PATCHES, feature_dim).astype(np.float32),
  }


def batched_records(paths, batch_size, schema=EVAL_SCHEMA):
  """Lists of at most `batch_size` (path, line, record) from `read_records`, in file order."""
  batch = []
  for item in read_records(paths, schema):
    batch.append(item)
    if len(batch) == batch_size:
      yield batch
      batch = []
  if batch:
    yield batch


def eval_feature_dim(schema=EVAL_SCHEMA):
  return check_schema(parse_schema(schema), EVAL_FIELDS, "the evaluation schema")


# ------------------------------------------------------------------------------------------------
# Training sample -> batches of our batch contract.

def training_examples(paths, schema=TRAIN_SCHEMA):
  """Yields one example dict (our contract's keys, unbatched) per line of their training files."""
  feature_dim = check_schema(parse_schema(schema), TRAIN_FIELDS, "the training schema")
  for path, line_number, record in read_records(paths, schema):
    inputs = model_inputs([(path, line_number, record)], feature_dim)
    yield {
        "input_word_ids": inputs["input_word_ids"][0],
        "input_mask": inputs["input_mask"][0],
        "input_type_ids": inputs["input_type_ids"][0],
        contract.FEATURES_KEY: inputs[contract.FEATURES_KEY][0],
        "masked_lm_positions": record["masked_lm_positions"].astype(np.int32),
        "masked_lm_ids": record["masked_lm_ids"].astype(np.int32),
        "masked_lm_weights": record["masked_lm_weights"].astype(np.float32),
        "masked_patch_positions": record["masked_patch_positions"].astype(np.int32),
        # Their masked patch slots are all real (no padding in their files).
        "masked_patch_weights": np.ones(record["masked_patch_positions"].shape, np.float32),
        contract.LABEL_KEY: np.int32(record["nx_sent_labels"][0]),
    }


def training_dataset(paths, batch_size, schema=TRAIN_SCHEMA, shuffle_buffer=1024, seed=0,
                     repeat=True):
  """`tf.data.Dataset` of batches (batch contract, patch-feature mode) from their training files.

  Args:
    paths: their files (`expand_paths`).
    batch_size: examples per batch (the global batch).
    schema: their input schema.
    shuffle_buffer: examples; 0 = file order.
    seed: shuffle seed.
    repeat: loop over the files forever (pretraining counts steps).
  """
  fields = parse_schema(schema)
  by_name = {f.name: f for f in fields}
  feature_dim = check_schema(fields, TRAIN_FIELDS, "the training schema")
  text_length = by_name["input_ids"].length
  spec = {
      "input_word_ids": tf.TensorSpec([text_length], tf.int32),
      "input_mask": tf.TensorSpec([text_length], tf.int32),
      "input_type_ids": tf.TensorSpec([text_length], tf.int32),
      contract.FEATURES_KEY: tf.TensorSpec([contract.NUM_PATCHES, feature_dim], tf.float32),
      "masked_lm_positions": tf.TensorSpec([by_name["masked_lm_positions"].length], tf.int32),
      "masked_lm_ids": tf.TensorSpec([by_name["masked_lm_ids"].length], tf.int32),
      "masked_lm_weights": tf.TensorSpec([by_name["masked_lm_weights"].length], tf.float32),
      "masked_patch_positions": tf.TensorSpec([by_name["masked_patch_positions"].length],
                                              tf.int32),
      "masked_patch_weights": tf.TensorSpec([by_name["masked_patch_positions"].length],
                                            tf.float32),
      contract.LABEL_KEY: tf.TensorSpec([], tf.int32),
  }
  dataset = tf.data.Dataset.from_generator(lambda: training_examples(paths, schema),
                                           output_signature=spec)
  if repeat:
    dataset = dataset.repeat()
  if shuffle_buffer:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed)
  return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

