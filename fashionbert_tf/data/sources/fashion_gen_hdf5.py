"""Reading Fashion-Gen's HDF5 files (real or toy, same schema), streamed in chunks.

Fashion-Gen (https://fashion-gen.com) ships `fashiongen_256_256_{train,validation}.h5`. Each file
holds parallel datasets, one row per product image:

  input_image        uint8 [N, 256, 256, 3]
  input_description  fixed-length bytes [N, 1]   stylist description (odd encodings, markup)
  input_name         fixed-length bytes [N, 1]
  input_productID    int [N, 1]
  input_category     fixed-length bytes [N, 1]
  input_subcategory  fixed-length bytes [N, 1]
  input_pose         fixed-length bytes [N, 1]
  (and others this project does not read: input_concat_description, input_gender, input_brand, ...)

`[N]` instead of `[N, 1]` is accepted too. Files are never loaded whole: `iterate_rows` reads
`chunk_size` rows at a time (h5py slices read only that part of the file).

Text cleaning (`clean_text`): bytes are decoded as UTF-8, else cp1252, else latin-1 (which decodes
any byte string, so no description is ever "undecodable" at the byte level); then HTML-ish markup
(`<br>`, `<p>...`), HTML entities (`&amp;`, `&nbsp;`, `&#233;`) and control characters are
removed and whitespace is collapsed to single spaces.

Rows whose description is empty after cleaning cannot make a text-image pair. What happens to them
is `on_bad_description`:
  "skip"  (default) the row is skipped and counted; `ReadReport` lists the counts and the first row
          numbers, and prepare-data logs them at the end.
  "error" a `FashionGenFormatError` naming the file and row is raised.
"""

import dataclasses
import html
import os
import re
import unicodedata

import h5py
import numpy as np

IMAGE_SHAPE = (256, 256, 3)
IMAGE_DATASET = "input_image"
# Fashion-Gen dataset name -> our field name. All are required.
TEXT_DATASETS = {
    "input_description": "description",
    "input_name": "name",
    "input_category": "category",
    "input_subcategory": "subcategory",
    "input_pose": "pose",
}
PRODUCT_ID_DATASET = "input_productID"
REQUIRED_DATASETS = (IMAGE_DATASET, PRODUCT_ID_DATASET) + tuple(TEXT_DATASETS)

_TAG = re.compile(r"<[^<>]{0,200}>")
_BREAK_TAG = re.compile(r"<\s*(br|/?p|/?div|/?li)\b[^<>]{0,200}>", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_WHITESPACE = re.compile(r"\s+")


class FashionGenFormatError(ValueError):
  """A Fashion-Gen HDF5 file does not have the expected schema or content."""


def decode_bytes(raw):
  """Bytes in an unknown encoding -> str: UTF-8, else cp1252, else latin-1 (never fails)."""
  if isinstance(raw, str):
    return raw
  if isinstance(raw, np.ndarray):
    raw = raw.item()
  raw = bytes(raw).rstrip(b"\x00")
  for encoding in ("utf-8", "cp1252"):
    try:
      return raw.decode(encoding)
    except UnicodeDecodeError:
      pass
  return raw.decode("latin-1")


def clean_text(raw):
  """Decodes (see `decode_bytes`), strips markup, entities and control chars, collapses spaces."""
  text = decode_bytes(raw)
  text = _BREAK_TAG.sub(" ", text)
  text = _TAG.sub("", text)
  # Twice: Fashion-Gen has doubly escaped entities such as `&amp;nbsp;`.
  text = html.unescape(html.unescape(text))
  text = unicodedata.normalize("NFC", text)
  text = _CONTROL.sub(" ", text)
  text = text.replace("\u00a0", " ")
  return _WHITESPACE.sub(" ", text).strip()


@dataclasses.dataclass
class ReadReport:
  """What `iterate_rows` did with one file: rows read, written and skipped (with reasons)."""
  path: str
  num_rows: int = 0
  num_yielded: int = 0
  skipped_empty_description: int = 0
  first_skipped_rows: list = dataclasses.field(default_factory=list)

  def summary(self):
    text = (f"{self.path}: {self.num_rows} rows, {self.num_yielded} converted, "
            f"{self.skipped_empty_description} skipped (empty description after cleaning)")
    if self.first_skipped_rows:
      text += f"; first skipped rows: {self.first_skipped_rows}"
    return text


def open_fashiongen(path):
  """Opens a Fashion-Gen HDF5 file read-only and validates its schema.

  Returns:
    (h5py.File, number of rows).

  Raises:
    FileNotFoundError: `path` does not exist.
    FashionGenFormatError: not an HDF5 file, a required dataset is missing, the image dataset is
      not uint8 [N, 256, 256, 3], or the datasets disagree on N. The message names file + dataset.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"Fashion-Gen HDF5 file not found: {path} (see data/README.md for how to get it, or run "
        "tools/make_toy_fashion_gen.py for the toy data)")
  try:
    handle = h5py.File(path, "r")
  except OSError as error:
    raise FashionGenFormatError(f"{path}: not a readable HDF5 file ({error})") from error
  try:
    missing = [name for name in REQUIRED_DATASETS if name not in handle]
    if missing:
      raise FashionGenFormatError(
          f"{path}: missing required dataset(s) {missing}; found {sorted(handle.keys())}")
    images = handle[IMAGE_DATASET]
    if tuple(images.shape[1:]) != IMAGE_SHAPE or images.dtype != np.uint8:
      raise FashionGenFormatError(
          f"{path}: dataset {IMAGE_DATASET} has shape {images.shape} dtype {images.dtype}; "
          f"expected uint8 [N, {', '.join(map(str, IMAGE_SHAPE))}]")
    num_rows = images.shape[0]
    for name in REQUIRED_DATASETS:
      dataset = handle[name]
      if dataset.shape[0] != num_rows:
        raise FashionGenFormatError(
            f"{path}: dataset {name} has {dataset.shape[0]} rows but {IMAGE_DATASET} has "
            f"{num_rows}")
      if name != IMAGE_DATASET and (len(dataset.shape) > 2 or
                                    (len(dataset.shape) == 2 and dataset.shape[1] != 1)):
        raise FashionGenFormatError(
            f"{path}: dataset {name} has shape {dataset.shape}; expected [N] or [N, 1]")
  except Exception:
    handle.close()
    raise
  return handle, num_rows


def count_rows(path):
  """Number of rows of a Fashion-Gen HDF5 file (validates the schema)."""
  handle, num_rows = open_fashiongen(path)
  handle.close()
  return num_rows


def _column(chunk):
  return chunk.reshape(chunk.shape[0])


def scan_descriptions(path, chunk_size=4096):
  """Counts the rows of a file whose description is empty after cleaning, reading only that column.

  A cheap first pass (descriptions are ~1 KB a row, images 196 KB): the TFDS builder stores these
  counts in the dataset's metadata before writing, with or without Beam.

  Returns:
    A `ReadReport` (num_rows, num_yielded = rows with a description, skipped_empty_description,
    first_skipped_rows).

  Raises:
    FileNotFoundError, FashionGenFormatError: see `open_fashiongen`.
  """
  report = ReadReport(path)
  handle, num_rows = open_fashiongen(path)
  with handle:
    column = handle["input_description"]
    for chunk_start in range(0, num_rows, chunk_size):
      chunk = _column(column[chunk_start:chunk_start + chunk_size])
      for offset, raw in enumerate(chunk):
        report.num_rows += 1
        if clean_text(raw):
          report.num_yielded += 1
        else:
          report.skipped_empty_description += 1
          if len(report.first_skipped_rows) < 10:
            report.first_skipped_rows.append(chunk_start + offset)
  return report


def iterate_rows(path, chunk_size=256, on_bad_description="skip", report=None, start=0,
                 stop=None):
  """Yields one dict per usable row of a Fashion-Gen HDF5 file, reading `chunk_size` rows at a time.

  Args:
    path: the HDF5 file.
    chunk_size: rows read per HDF5 access (memory ~ chunk_size * 196 KB).
    on_bad_description: "skip" (count in `report`) or "error" (raise), see the module docstring.
    report: a `ReadReport` to fill in; a fresh one is used when None.
    start, stop: row range to read (default: all rows).

  Yields:
    {"record_id": int (row index in the file), "image": uint8 [256, 256, 3], "description",
     "name", "category", "subcategory", "pose": cleaned str, "product_id": int}.

  Raises:
    FileNotFoundError, FashionGenFormatError: see `open_fashiongen`; also an empty description
      with on_bad_description="error" (names file and row).
  """
  if on_bad_description not in ("skip", "error"):
    raise ValueError(f"on_bad_description must be 'skip' or 'error', got {on_bad_description!r}")
  report = report if report is not None else ReadReport(path)
  handle, num_rows = open_fashiongen(path)
  stop = num_rows if stop is None else min(stop, num_rows)
  with handle:
    for chunk_start in range(start, stop, chunk_size):
      chunk_stop = min(chunk_start + chunk_size, stop)
      images = handle[IMAGE_DATASET][chunk_start:chunk_stop]
      product_ids = _column(handle[PRODUCT_ID_DATASET][chunk_start:chunk_stop])
      texts = {field: _column(handle[name][chunk_start:chunk_stop])
               for name, field in TEXT_DATASETS.items()}
      for offset in range(chunk_stop - chunk_start):
        row = chunk_start + offset
        report.num_rows += 1
        record = {"record_id": row, "image": images[offset]}
        for field, column in texts.items():
          record[field] = clean_text(column[offset])
        try:
          record["product_id"] = int(np.asarray(product_ids[offset]).item())
        except (TypeError, ValueError) as error:
          raise FashionGenFormatError(
              f"{path}: row {row}: dataset {PRODUCT_ID_DATASET} value "
              f"{product_ids[offset]!r} is not an integer") from error
        if not record["description"]:
          if on_bad_description == "error":
            raise FashionGenFormatError(
                f"{path}: row {row}: dataset input_description is empty after decoding and "
                f"cleaning (raw value {texts['description'][offset]!r:.80})")
          report.skipped_empty_description += 1
          if len(report.first_skipped_rows) < 10:
            report.first_skipped_rows.append(row)
          continue
        report.num_yielded += 1
        yield record
