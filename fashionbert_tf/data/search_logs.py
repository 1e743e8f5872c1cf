"""Search logs (paper 3.4): the <query, title, image> click data FashionBERT is fine-tuned on.

The format, for toy and real logs alike (data/README.md, "Search logs"), is a folder of JSON-lines
files, UTF-8, one JSON object per line:

  catalogue.jsonl   one product per line: the products a search can show (and that the two-stage
                    retrieval indexes):
                      {"product_id": 900123, "title": "Nordic Pixel Navy Hoodie",
                       "attributes": {...}}            # "attributes": optional (toy: known truth)
  train.jsonl       one search session per line: a query and the products shown for it, clicked
  test.jsonl        or not:
                      {"query_id": "q000017", "query": "long sleeve navy hoodie",
                       "impressions": [{"product_id": 900123, "title": "...", "clicked": 1}, ...],
                       "query_attributes": {...}}      # optional (toy only: what the query asks)
  info.json         optional: how the logs were made (generator settings, counts, click rates).

Field rules (checked by `read_catalogue` / `read_sessions`; a violation is a `SearchLogFormatError`
naming the file, the line and the field):
  product_id  int    the Fashion-Gen product id; its image is the product's first record (pose) in
                     the prepared TFRecords (`search.image_records`).
  title       str    non-empty; the product title the search engine shows (not the description).
  query       str    non-empty, as the shopper typed it.
  query_id    str    unique per session within a file.
  clicked     0 / 1  (JSON true / false accepted).
  impressions        non-empty list.
The train / test split is by query text (`split_by_query`): a query string and all its sessions
are on one side only, so the test split measures queries the model never saw.

The fine-tuning examples are the impressions: (query, title, product_id) -> label clicked (1) or
shown-but-not-clicked (0) (`impression_examples`).
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional

import numpy as np

CATALOGUE_FILE = "catalogue.jsonl"
TRAIN_FILE = "train.jsonl"
TEST_FILE = "test.jsonl"
INFO_FILE = "info.json"
SPLIT_FILES = {"train": TRAIN_FILE, "test": TEST_FILE}


class SearchLogFormatError(ValueError):
  """A search-log file breaks the format (the message names the file, line and field)."""


@dataclasses.dataclass(frozen=True)
class CatalogueProduct:
  product_id: int
  title: str
  attributes: Optional[Dict] = None


@dataclasses.dataclass(frozen=True)
class Impression:
  product_id: int
  title: str
  clicked: int


@dataclasses.dataclass(frozen=True)
class SearchSession:
  query_id: str
  query: str
  impressions: tuple  # of Impression
  query_attributes: Optional[Dict] = None


@dataclasses.dataclass(frozen=True)
class ImpressionExamples:
  """The impressions of some sessions as parallel arrays (one entry per impression), N entries."""
  query: List[str]
  title: List[str]
  product_id: np.ndarray   # int64 [N]
  clicked: np.ndarray      # int32 [N]
  session_index: np.ndarray  # int32 [N]: which session (position in the list given)

  def __len__(self):
    return len(self.query)


def _fail(path, line_number, message):
  raise SearchLogFormatError(f"{path}:{line_number}: {message}")


def _required(record, field, kind, path, line_number, prefix=""):
  """record[field], checked to be an int (not bool) or a non-empty str; else an error."""
  if field not in record:
    _fail(path, line_number, f"{prefix}missing field {field!r}")
  value = record[field]
  if kind is int:
    if isinstance(value, bool) or not isinstance(value, int):
      _fail(path, line_number, f"{prefix}field {field!r} must be an integer, got {value!r}")
  elif kind is str:
    if not isinstance(value, str) or not value.strip():
      _fail(path, line_number, f"{prefix}field {field!r} must be a non-empty string, got "
            f"{value!r}")
  return value


def _json_lines(path):
  """Yields (line number, dict) for each non-blank line; bad JSON -> SearchLogFormatError."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"search-log file not found: {path}")
  with open(path, encoding="utf-8") as handle:
    for line_number, line in enumerate(handle, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        _fail(path, line_number, f"not valid JSON ({error.msg})")
      if not isinstance(record, dict):
        _fail(path, line_number, "a line must be a JSON object")
      yield line_number, record


def _clicked(value, path, line_number, index):
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, int) and value in (0, 1):
    return value
  _fail(path, line_number, f"impressions[{index}].clicked must be 0 / 1, got {value!r}")


def _records_with_unique_key(path, key_field, key_type):
  """Yields (line number, record, key) of each JSON line of `path`; `key_field` is required, of
  `key_type`, and unique in the file (SearchLogFormatError naming the line otherwise)."""
  seen = set()
  for line_number, record in _json_lines(path):
    key = _required(record, key_field, key_type, path, line_number)
    if key in seen:
      _fail(path, line_number, f"{key_field} {key!r} appears twice")
    seen.add(key)
    yield line_number, record, key


def read_catalogue(path):
  """Reads catalogue.jsonl -> list of `CatalogueProduct` (file order). Duplicate ids are errors."""
  products = []
  for line_number, record, product_id in _records_with_unique_key(path, "product_id", int):
    title = _required(record, "title", str, path, line_number)
    products.append(CatalogueProduct(product_id, title, record.get("attributes")))
  if not products:
    raise SearchLogFormatError(f"{path}: no products")
  return products


def read_sessions(path):
  """Reads a sessions file (train.jsonl / test.jsonl) -> list of `SearchSession` (file order)."""
  sessions = []
  for line_number, record, query_id in _records_with_unique_key(path, "query_id", str):
    query = _required(record, "query", str, path, line_number)
    raw = record.get("impressions")
    if not isinstance(raw, list) or not raw:
      _fail(path, line_number, "field 'impressions' must be a non-empty list")
    impressions = []
    for index, item in enumerate(raw):
      if not isinstance(item, dict):
        _fail(path, line_number, f"impressions[{index}] must be an object")
      prefix = f"impressions[{index}]: "
      _required(item, "product_id", int, path, line_number, prefix)
      _required(item, "title", str, path, line_number, prefix)
      if "clicked" not in item:
        _fail(path, line_number, f"impressions[{index}]: missing field 'clicked'")
      impressions.append(Impression(item["product_id"], item["title"],
                                    _clicked(item["clicked"], path, line_number, index)))
    sessions.append(SearchSession(query_id, query, tuple(impressions),
                                  record.get("query_attributes")))
  if not sessions:
    raise SearchLogFormatError(f"{path}: no sessions")
  return sessions


def read_split(logs_dir, split):
  """The sessions of `split` ("train" | "test") in `logs_dir`."""
  if split not in SPLIT_FILES:
    raise ValueError(f"search-log split {split!r}: expected one of {sorted(SPLIT_FILES)}")
  return read_sessions(os.path.join(logs_dir, SPLIT_FILES[split]))


def read_info(logs_dir):
  """The optional info.json of `logs_dir` as a dict ({} when the folder has none)."""
  path = os.path.join(logs_dir, INFO_FILE)
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as handle:
    return json.load(handle)


def write_json_lines(path, records):
  """Writes dicts as JSON lines to `path` (via `<path>.tmp`, renamed when complete)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp_path = path + ".tmp"
  with open(tmp_path, "w", encoding="utf-8") as handle:
    for record in records:
      handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
  os.replace(tmp_path, path)


def session_record(session):
  """The JSON object of one session line."""
  record = {"query_id": session.query_id, "query": session.query,
            "impressions": [{"product_id": int(i.product_id), "title": i.title,
                             "clicked": int(i.clicked)} for i in session.impressions]}
  if session.query_attributes is not None:
    record["query_attributes"] = session.query_attributes
  return record


def catalogue_record(product):
  record = {"product_id": int(product.product_id), "title": product.title}
  if product.attributes is not None:
    record["attributes"] = product.attributes
  return record


def split_by_query(sessions, test_fraction, seed):
  """Splits sessions by distinct query text: (train sessions, test sessions).

  The distinct queries (exact strings after lower-casing and collapsing whitespace) are shuffled
  with `seed` and the first round(test_fraction * #queries) (at least 1 when test_fraction > 0)
  go to test with all their sessions; session order is kept within each side.
  """
  if not 0.0 <= test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
  queries = sorted({normalize_query(s.query) for s in sessions})
  order = np.random.default_rng(seed).permutation(len(queries))
  num_test = int(round(test_fraction * len(queries)))
  if test_fraction > 0:
    num_test = max(num_test, 1)
  test_queries = {queries[i] for i in order[:num_test]}
  train = [s for s in sessions if normalize_query(s.query) not in test_queries]
  test = [s for s in sessions if normalize_query(s.query) in test_queries]
  return train, test


def normalize_query(query):
  return " ".join(query.lower().split())


def impression_examples(sessions):
  """All impressions of `sessions` as one `ImpressionExamples` (label = clicked)."""
  queries, titles, product_ids, clicked, session_index = [], [], [], [], []
  for index, session in enumerate(sessions):
    for impression in session.impressions:
      queries.append(session.query)
      titles.append(impression.title)
      product_ids.append(impression.product_id)
      clicked.append(impression.clicked)
      session_index.append(index)
  return ImpressionExamples(queries, titles, np.asarray(product_ids, np.int64),
                            np.asarray(clicked, np.int32), np.asarray(session_index, np.int32))
