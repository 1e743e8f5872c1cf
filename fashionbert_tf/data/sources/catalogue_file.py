"""A retailer's own catalogue (a CSV or JSON Lines table of image paths and texts) as a data source.

The file (`data.catalogue_file`) has one row per product image:

  image        required  path of the photo, relative to the catalogue file's folder or absolute;
                         JPEG, PNG, WebP, GIF (first frame), BMP, TIFF; any size and mode
  text         required  the product's title or description (cleaned like Fashion-Gen's:
                         `fashion_gen_hdf5.clean_text`)
  product_id   optional  rows with the same product_id are one product's images (Fashion-Gen's
                         poses); absent or empty = the row is a product of its own
  category     optional  (absent = "", one group)
  subcategory  optional  negatives and retrieval candidates come from the query's subcategory
  pose         optional  a name for the image (absent = the image's file name)
  name         optional  a short product name (absent = the product_id as written)
  split        optional  "train" or "validation"; absent or empty = drawn per product: a seeded
                         hash of the product puts it in validation with probability
                         `data.validation_fraction` (all images of a product in one split)

JSON Lines (`.jsonl`, `.ndjson`, `.json`): one JSON object per line, blank lines ignored; other keys
are ignored. CSV (`.csv`; `.tsv` tab-separated): a header row naming the columns, RFC 4180 quoting
(commas and newlines inside quoted fields). Both are read as UTF-8 (a BOM is allowed).

What becomes of a row (the record schema of `records.py`):
  record_id    the row's index among the file's data rows (0-based; unique over both splits)
  product_id   the product_id when it is a decimal integer in int64 range (leading zeros dropped),
               else a stable 63-bit hash of it (BLAKE2b); without a product_id, a hash of the
               image path
  description  the cleaned text; category, subcategory, pose, name: cleaned the same way
  image        `image_loading.load_image(path, data.image_resize)`: 256 x 256 RGB (EXIF orientation,
               alpha on white, pad | crop | stretch, LANCZOS), encoded by `records.encode_image`

Two passes, neither holding the catalogue in memory:
  1. `scan_catalogue` reads the table only (no image is opened): checks the file's format (a line
     that is not a JSON object, a missing `image` / `text` column, a CSV row with the wrong number
     of fields, a split other than train / validation: `CatalogueFormatError` naming the file and
     line), counts rows per split, and finds the rows skipped for their text or path: an empty
     text after cleaning, a duplicate (product_id, image) row, a missing image file. It keeps one
     64-bit hash per (product, image) for the duplicates, and byte offsets every
     `rows_per_task` rows so that a worker can start reading in the middle (Beam).
  2. `iterate_examples` streams rows again and loads the images on a thread pool (Pillow releases
     the GIL while it decodes and resizes, TensorFlow while it encodes), in file order, with at
     most a few rows per worker in flight. An image that cannot be used (`ImageLoadError`:
     undecodable, truncated, under `image_loading.MIN_IMAGE_SIDE` pixels) skips its row.

Bad rows never stop the run (`data.on_bad_row: skip`) unless asked to (`fail`: `BadRowError` naming
file, line and reason); `SkipReport` counts them by reason and names the first few with file and
line; prepare-data writes the counts into dataset_info.json and its closing log line.
"""

import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import os
import re
import time

from absl import logging

from fashionbert_tf.data.sources import fashion_gen_hdf5
from fashionbert_tf.data import image_loading
from fashionbert_tf.data import records

REQUIRED_COLUMNS = ("image", "text")
OPTIONAL_COLUMNS = ("product_id", "category", "subcategory", "pose", "name", "split")
SPLITS = ("train", "validation")
ON_BAD_ROW = ("skip", "fail")
# Why a row is skipped: the text / path reasons found by the scan, the image ones by the loader.
SKIP_REASONS = ("empty_text", "duplicate", "missing_file", "undecodable", "truncated",
                "too_small")
# Rows one Beam task reads (and the stride of the byte offsets the scan keeps).
ROWS_PER_TASK = 1024
# Rows named (file:line) per skip reason.
NUM_NAMED_SKIPS = 5
_INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]+")
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
_CSV_SUFFIXES = (".csv", ".tsv")


class CatalogueFormatError(ValueError):
  """The catalogue file cannot be read as a catalogue; the message names the file and line."""


class BadRowError(ValueError):
  """A row that cannot be used, with `data.on_bad_row: fail`; names the file, line and reason."""

  def __init__(self, message, reason):
    super().__init__(message)
    self.reason = reason


def check_on_bad_row(value):
  if value not in ON_BAD_ROW:
    raise ValueError(f"data.on_bad_row = {value!r}; expected one of {ON_BAD_ROW}")
  return value


def file_format(path):
  """"jsonl", "csv" or "tsv" from the file name; anything else is a `CatalogueFormatError`."""
  lower = os.fspath(path).lower()
  if lower.endswith(_JSON_SUFFIXES):
    return "jsonl"
  if lower.endswith(_CSV_SUFFIXES):
    return lower[-3:]
  raise CatalogueFormatError(
      f"{path}: a catalogue is a JSON Lines ({', '.join(_JSON_SUFFIXES)}) or CSV "
      f"({', '.join(_CSV_SUFFIXES)}) file; cannot tell the format of this one from its name")


def stable_hash(text):
  """A stable non-negative 63-bit integer of a string (BLAKE2b; the same in every process)."""
  digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "big") & _INT64_MAX


def product_id_number(product_key):
  """The int64 record product_id of a catalogue product_id string (module docstring)."""
  text = product_key.strip()
  if _INTEGER.fullmatch(text):
    number = int(text)
    if -_INT64_MAX - 1 <= number <= _INT64_MAX:
      return number
  return stable_hash("product:" + product_key)


def assign_split(product_key, seed, validation_fraction):
  """"validation" with probability `validation_fraction`, by a seeded hash of the product."""
  draw = stable_hash(f"split:{seed}:{product_key}") / float(_INT64_MAX + 1)
  return "validation" if draw < validation_fraction else "train"


# ---- reading the table ---------------------------------------------------------------------------

@dataclasses.dataclass
class RawRow:
  """One data row as written: its index among data rows, its first line (1-based), its values."""
  index: int
  line: int
  values: dict


def _line_reader(handle, offsets):
  """Decoded lines of a binary file. `offsets` = [byte offset after the last line handed out,
  lines handed out so far, byte offset where the last line began]; the csv module pulls one line
  at a time, so between two rows `offsets[0]` is where the next row begins."""
  while True:
    raw = handle.readline()
    if not raw:
      return
    offsets[2] = offsets[0]
    offsets[0] += len(raw)
    offsets[1] += 1
    try:
      yield raw.decode("utf-8-sig" if offsets[2] == 0 else "utf-8")
    except UnicodeDecodeError as error:
      raise CatalogueFormatError(f"{handle.name}:{offsets[1]}: not UTF-8 ({error}); save the "
                                 "catalogue as UTF-8") from None


def _check_columns(path, columns, line):
  missing = [name for name in REQUIRED_COLUMNS if name not in columns]
  if missing:
    raise CatalogueFormatError(
        f"{path}:{line}: no {' or '.join(repr(m) for m in missing)} column; a catalogue row needs "
        f"'image' (a file path) and 'text' (title or description), optionally "
        f"{', '.join(OPTIONAL_COLUMNS)}; found {sorted(columns)}")


def _as_text(value):
  if value is None:
    return ""
  if isinstance(value, str):
    return value
  if isinstance(value, (bool, dict, list)):
    return json.dumps(value, ensure_ascii=False)
  return str(value)


def _delimiter(fmt):
  return "\t" if fmt == "tsv" else ","


def read_header(path):
  """(CSV header's column names, byte offset after it); (None, 0) for JSON Lines.

  Raises:
    FileNotFoundError: no such file.
    CatalogueFormatError: an empty CSV file, or a header without image / text.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"catalogue file not found: {path} (data.catalogue_file)")
  fmt = file_format(path)
  if fmt == "jsonl":
    return None, 0
  offsets = [0, 0, 0]
  with open(path, "rb") as handle:
    reader = csv.reader(_line_reader(handle, offsets), delimiter=_delimiter(fmt))
    try:
      header = next(reader)
    except StopIteration:
      raise CatalogueFormatError(f"{path}: empty file; a CSV catalogue starts with a header row "
                                 "naming its columns (image,text,...)") from None
    except csv.Error as error:
      raise CatalogueFormatError(f"{path}:1: unreadable header ({error})") from None
  header = [name.strip() for name in header]
  _check_columns(path, header, 1)
  return header, offsets[0]


def iterate_raw_rows(path, start=None, position=None):
  """Yields the `RawRow`s of a catalogue file in order, streaming.

  Args:
    path: the catalogue file.
    start: optional (byte offset, row index, line number) of the row to start at (a scan's
      `task_starts` entry); default the first data row.
    position: optional one-element list; before each row is yielded, `position[0]` is set to that
      row's (byte offset, row index, line number).

  Raises:
    FileNotFoundError: no such file.
    CatalogueFormatError: a line that is not a JSON object, a row without image / text, a CSV row
      with another number of fields than the header, bytes that are not UTF-8 (file and line).
  """
  fmt = file_format(path)
  header, header_end = read_header(path)
  offset, index, line = start if start is not None else (header_end, 0, 2 if header else 1)
  offsets = [offset, line - 1, offset]
  position = position if position is not None else [None]
  with open(path, "rb") as handle:
    handle.seek(offset)
    lines = _line_reader(handle, offsets)
    if fmt == "jsonl":
      for text in lines:
        if not text.strip():
          continue
        number = offsets[1]
        try:
          values = json.loads(text)
        except json.JSONDecodeError as error:
          raise CatalogueFormatError(f"{path}:{number}: not JSON ({error.msg} at column "
                                     f"{error.colno})") from None
        if not isinstance(values, dict):
          raise CatalogueFormatError(f"{path}:{number}: a JSON object per line expected, got "
                                     f"{type(values).__name__}")
        _check_columns(path, values, number)
        position[0] = (offsets[2], index, number)
        yield RawRow(index, number, {key: _as_text(value) for key, value in values.items()})
        index += 1
      return
    reader = csv.reader(lines, delimiter=_delimiter(fmt))
    while True:
      row_start = (offsets[0], index, offsets[1] + 1)
      try:
        fields = next(reader)
      except StopIteration:
        return
      except csv.Error as error:
        raise CatalogueFormatError(f"{path}:{row_start[2]}: unreadable CSV row ({error})") from None
      if not fields or (len(fields) == 1 and not fields[0].strip()):
        continue   # a blank line
      if len(fields) != len(header):
        raise CatalogueFormatError(
            f"{path}:{row_start[2]}: {len(fields)} fields, but the header names {len(header)} "
            f"columns ({','.join(header)}); quote fields that contain commas or newlines")
      position[0] = row_start
      yield RawRow(index, row_start[2], dict(zip(header, fields)))
      index += 1


# ---- rows ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
  """A catalogue row resolved: what the record will hold, less the image."""
  index: int
  line: int
  image_path: str
  text: str
  product_key: str
  product_id: int
  category: str
  subcategory: str
  pose: str
  name: str
  split: str

  def metadata(self):
    return {"record_id": self.index, "product_id": self.product_id, "category": self.category,
            "subcategory": self.subcategory}


def resolve_row(raw, path, seed=42, validation_fraction=0.1):
  """A `RawRow` -> `Row` (text cleaned, path resolved, product id and split decided).

  Raises:
    CatalogueFormatError: a `split` value other than train / validation (file and line).
  """
  values = raw.values
  image = values.get("image", "").strip()
  folder = os.path.dirname(os.path.abspath(path))
  image_path = os.path.normpath(os.path.join(folder, os.path.expanduser(image))) if image else ""
  product_key = values.get("product_id", "").strip()
  product_id = (product_id_number(product_key) if product_key
                else stable_hash("image:" + image_path))
  split = values.get("split", "").strip().lower()
  if split and split not in SPLITS:
    raise CatalogueFormatError(f"{path}:{raw.line}: split {values['split']!r}; expected one of "
                               f"{SPLITS} or empty (drawn by data.validation_fraction)")
  if not split:
    split = assign_split(product_key or image_path, seed, validation_fraction)
  clean = fashion_gen_hdf5.clean_text
  return Row(index=raw.index, line=raw.line, image_path=image_path,
             text=clean(values.get("text", "")), product_key=product_key, product_id=product_id,
             category=clean(values.get("category", "")),
             subcategory=clean(values.get("subcategory", "")),
             pose=clean(values.get("pose", "")) or os.path.basename(image),
             name=clean(values.get("name", "")) or product_key, split=split)


class SkipReport:
  """Rows skipped, by split and reason, and the first few of each reason named `file:line: why`."""

  def __init__(self, path):
    self.path = path
    self.counts = collections.Counter()          # (split, reason) -> rows
    self.examples = collections.defaultdict(list)

  def add(self, split, reason, line, message):
    self.counts[(split, reason)] += 1
    if len(self.examples[reason]) < NUM_NAMED_SKIPS:
      self.examples[reason].append(f"{self.path}:{line}: {message}")

  def by_reason(self, split=None):
    """{reason: rows} of one split (None: both), reasons with no row left out."""
    totals = collections.Counter()
    for (row_split, reason), count in self.counts.items():
      if split is None or row_split == split:
        totals[reason] += count
    order = list(SKIP_REASONS) + sorted(set(totals) - set(SKIP_REASONS))   # none is dropped
    return {reason: totals[reason] for reason in order if totals[reason]}

  def total(self, split=None):
    return sum(self.by_reason(split).values())

  def as_dict(self, split=None):
    reasons = self.by_reason(split)
    result = {"total": sum(reasons.values()), "by_reason": reasons}
    if split is None:
      result["first_rows"] = {reason: list(self.examples[reason]) for reason in reasons}
    return result

  def summary(self, split=None):
    reasons = self.by_reason(split)
    if not reasons:
      return "no row skipped"
    parts = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
    return f"{sum(reasons.values())} rows skipped ({parts})"


def _fail_or_skip(report, on_bad_row, reason, row, message):
  if on_bad_row == "fail":
    raise BadRowError(f"{report.path}:{row.line}: {message} (data.on_bad_row=fail; "
                      "data.on_bad_row=skip skips and counts such rows)", reason)
  report.add(row.split, reason, row.line, message)


# ---- pass 1: the table ---------------------------------------------------------------------------

@dataclasses.dataclass
class ScanResult:
  """What `scan_catalogue` found (no image opened)."""
  path: str
  num_rows: int = 0
  # Rows per split that the scan kept (their images may still fail to load).
  split_rows: dict = dataclasses.field(default_factory=lambda: {s: 0 for s in SPLITS})
  # Indices of the rows the scan skipped (empty text, duplicate, missing file).
  skipped: set = dataclasses.field(default_factory=set)
  report: SkipReport = None
  # (byte offset, row index, line) of rows 0, rows_per_task, 2 * rows_per_task, ...
  task_starts: list = dataclasses.field(default_factory=list)
  rows_per_task: int = ROWS_PER_TASK

  def task_ranges(self):
    """[(start, num_rows)]: the row ranges of the Beam tasks, `rows_per_task` rows each."""
    return [(start, min(self.rows_per_task, self.num_rows - start[1]))
            for start in self.task_starts]


def scan_catalogue(path, seed=42, validation_fraction=0.1, on_bad_row="skip",
                   check_files=True, rows_per_task=ROWS_PER_TASK):
  """Pass 1 over the table (module docstring). Returns a `ScanResult`.

  Raises:
    FileNotFoundError, CatalogueFormatError: see `iterate_raw_rows`.
    BadRowError: a bad row with on_bad_row="fail".
  """
  check_on_bad_row(on_bad_row)
  if not 0.0 <= validation_fraction <= 1.0:
    raise ValueError(f"data.validation_fraction = {validation_fraction}; expected a fraction in "
                     "[0, 1]")
  result = ScanResult(path, report=SkipReport(path), rows_per_task=rows_per_task)
  seen = set()
  position = [None]
  start = last_log = time.time()
  for raw in iterate_raw_rows(path, position=position):
    if time.time() - last_log >= 5.0:
      last_log = time.time()
      logging.info("catalogue %s: scanned %d rows (%.0f rows/s)", path, raw.index,
                   raw.index / max(last_log - start, 1e-9))
    if raw.index % rows_per_task == 0:
      result.task_starts.append(position[0])
    result.num_rows += 1
    row = resolve_row(raw, path, seed, validation_fraction)
    key = stable_hash(f"{row.product_key}\0{row.image_path}")
    if not row.text:
      _fail_or_skip(result.report, on_bad_row, "empty_text", row,
                    "empty text after cleaning")
    elif key in seen:
      _fail_or_skip(result.report, on_bad_row, "duplicate", row,
                    f"duplicate of an earlier row (product_id {row.product_key!r}, image "
                    f"{raw.values.get('image', '')!r})")
    elif check_files and not os.path.isfile(row.image_path):
      _fail_or_skip(result.report, on_bad_row, "missing_file", row,
                    f"image file not found: {row.image_path or '(no path)'}")
    else:
      seen.add(key)
      result.split_rows[row.split] += 1
      continue
    seen.add(key)
    result.skipped.add(raw.index)
  return result


# ---- pass 2: the images --------------------------------------------------------------------------

def load_and_encode(image_path, resize="pad", image_format="png", jpeg_quality=95):
  """(encoded 256x256 image bytes, None), or (None, ImageLoadError) for an unusable image."""
  try:
    image = image_loading.load_image(image_path, resize=resize)
  except image_loading.ImageLoadError as error:
    return None, error
  return records.encode_image(image, image_format, jpeg_quality), None


def record_fields(row):
  """The record fields of a `Row` (all but the image), as `records.make_example` takes them."""
  return {"record_id": row.index, "product_id": row.product_id, "description": row.text,
          "name": row.name, "category": row.category, "subcategory": row.subcategory,
          "pose": row.pose}


def iterate_examples(path, scan, resize="pad", image_format="png", jpeg_quality=95,
                     on_bad_row="skip", report=None, seed=42, validation_fraction=0.1,
                     split=None, start=None, num_rows=None, num_workers=0, on_row=None):
  """Pass 2: yields (Row, encoded image bytes) of the usable rows, in file order.

  Args:
    path: the catalogue file; scan: its `ScanResult` (rows it skipped are passed over).
    resize: `data.image_resize`; image_format, jpeg_quality: as `records.encode_image`.
    on_bad_row: "skip" (count in `report`) or "fail" (raise `BadRowError`).
    report: a `SkipReport` for the rows whose image fails to load (fresh one when None).
    seed, validation_fraction: the split draw (as in the scan).
    split: only rows of this split (None: both).
    start, num_rows: read `num_rows` rows from `start` (a `scan.task_starts` entry); default all.
    num_workers: image-loading threads; 0 = one per CPU core.
    on_row: optional callable(), called once per row read (progress).

  Raises:
    BadRowError: an image fails to load with on_bad_row="fail".
  """
  check_on_bad_row(on_bad_row)
  report = report if report is not None else SkipReport(path)
  num_workers = num_workers or os.cpu_count() or 1
  window = collections.deque()

  def finish(row, future):
    encoded, error = future.result()
    if error is not None:
      _fail_or_skip(report, on_bad_row, error.reason, row, str(error))
      return None
    return row, encoded

  with concurrent.futures.ThreadPoolExecutor(max_workers=num_workers) as pool:
    for raw in iterate_raw_rows(path, start):
      if num_rows is not None and raw.index >= (start[1] if start else 0) + num_rows:
        break
      if on_row is not None:
        on_row()
      if raw.index in scan.skipped:
        continue
      row = resolve_row(raw, path, seed, validation_fraction)
      if split is not None and row.split != split:
        continue
      window.append((row, pool.submit(load_and_encode, row.image_path, resize, image_format,
                                      jpeg_quality)))
      while len(window) > 4 * num_workers:
        done = finish(*window.popleft())
        if done is not None:
          yield done
    while window:
      done = finish(*window.popleft())
      if done is not None:
        yield done
