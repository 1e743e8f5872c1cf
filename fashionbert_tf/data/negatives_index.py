"""The negatives index: what the negative sampler needs from a split's shards, without reading them.

The sampler (`pairing.NegativeSampler`) needs, per product: its id, its description (the text of
its negatives), its (category, subcategory) group and how many records (poses) it has. Reading
that from the shards is a full pass over every record (on Fashion-Gen ~260k records with their
images) before the first step. `prepare-data` (and the feature precompute) therefore write it next
to the shards, one JSON file per split:

  <shard dir>/<split>.negatives_index.json
    version          1
    file_pattern     the pattern it was built from (for people; not checked)
    fingerprint      of the shards it describes (below)
    files            [{name, size, num_records}] in sorted order
    products         [[product_id, description, category, subcategory, num_records], ...] in
                     order of first appearance

The fingerprint is a SHA-256 over each shard's name, size and the bytes of its first and last
64 KiB: not a checksum of every byte (reading every byte is what the index saves), but a shard
that was rewritten, cut short or replaced changes it. Training reads the index when its
fingerprint matches the shards, and otherwise rebuilds it from the shards (logging why) and writes
it back when the folder is writable.
"""

import hashlib
import json
import os
import time

from absl import logging

from fashionbert_tf.data import records

VERSION = 1
EDGE_BYTES = 64 * 1024
SUFFIX = ".negatives_index.json"


def index_path(file_pattern):
  """Where the index of `file_pattern` lives: `<dir>/<split>.negatives_index.json` for the
  standard `<dir>/<split>-?????-of-?????.tfrecord` pattern, `<dir>/<name>-<split>.negatives_index
  .json` for TFDS's `<dir>/<name>-<split>.tfrecord-?????-of-?????`; else a name from the
  pattern."""
  pattern = str(file_pattern).split(",")[0].strip()
  directory, name = os.path.split(pattern)
  if ".tfrecord-" in name:   # TFDS: fashion_gen-train.tfrecord-?????-of-?????
    prefix = name.split(".tfrecord-", 1)[0]
  else:
    prefix = name.split("-", 1)[0] if "-" in name else name
  prefix = "".join(c if c.isalnum() or c in "._-" else "_" for c in prefix) or "records"
  return os.path.join(directory, prefix + SUFFIX)


def fingerprint(files):
  """SHA-256 hex of the files' names, sizes, and first and last `EDGE_BYTES` bytes."""
  digest = hashlib.sha256()
  for path in files:
    size = os.path.getsize(path)
    digest.update(f"{os.path.basename(path)}\0{size}\0".encode("utf-8"))
    with open(path, "rb") as handle:
      digest.update(handle.read(EDGE_BYTES))
      if size > EDGE_BYTES:
        handle.seek(max(EDGE_BYTES, size - EDGE_BYTES))
        digest.update(handle.read())
  return digest.hexdigest()


def build_index(file_pattern, skip_corrupt=False):
  """Reads every record of `file_pattern` once; returns the index dict (see the module doc).

  skip_corrupt: a corrupt file counts up to its first unreadable record (its `files` entry then
  has `first_unreadable_record`) instead of raising `RecordFileError`.
  """
  files = records.list_record_files(file_pattern)
  products = {}
  file_counts = {path: 0 for path in files}
  unreadable = {} if skip_corrupt else None
  for path, _, batch in records.iterate_parsed_batches(file_pattern, unreadable=unreadable):
    file_counts[path] += len(batch["product_id"])
    for i, product_id in enumerate(batch["product_id"]):
      product_id = int(product_id)
      entry = products.get(product_id)
      if entry is None:
        products[product_id] = [product_id, batch["description"][i].decode("utf-8"),
                                batch["category"][i].decode("utf-8"),
                                batch["subcategory"][i].decode("utf-8"), 1]
      else:
        entry[4] += 1
  return {"version": VERSION, "file_pattern": str(file_pattern), "fingerprint": fingerprint(files),
          "files": [dict({"name": os.path.basename(path), "size": os.path.getsize(path),
                          "num_records": file_counts[path]},
                         **({"first_unreadable_record": unreadable[path]}
                            if unreadable and path in unreadable else {}))
                    for path in files],
          "products": list(products.values())}


def write_index(index, path):
  """Writes `index` to `path` atomically (a temporary file renamed over it)."""
  temporary = f"{path}.tmp-{os.getpid()}"
  with open(temporary, "w", encoding="utf-8") as handle:
    json.dump(index, handle, ensure_ascii=False, separators=(",", ":"))
  os.replace(temporary, path)
  return path


def write_for(file_pattern):
  """Builds the index of `file_pattern` and writes it next to the shards (prepare-data)."""
  start = time.time()
  index = build_index(file_pattern)
  path = write_index(index, index_path(file_pattern))
  logging.info("negatives index -> %s (%d products, %d records, %.1f s)", path,
               len(index["products"]), sum(f["num_records"] for f in index["files"]),
               time.time() - start)
  return path


def products_alone_in_group(path):
  """Products of an index file (`path`, None -> None) that have no other product in their
  (category, subcategory): the ones same-subcategory negatives fall back to any product for."""
  if not path or not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as handle:
    products = json.load(handle)["products"]
  groups = {}
  for product in products:
    key = (product[2], product[3])
    groups[key] = groups.get(key, 0) + 1
  return sum(1 for product in products if groups[(product[2], product[3])] < 2)


def _stale_reason(index, files):
  if index.get("version") != VERSION:
    return f"version {index.get('version')} is not {VERSION}"
  names = [os.path.basename(path) for path in files]
  if [f["name"] for f in index.get("files", [])] != names:
    return "it describes other files"
  if index.get("fingerprint") != fingerprint(files):
    return "the shards changed since it was written"
  return None


def load_or_build(file_pattern, skip_corrupt=False, write_back=True):
  """The index of `file_pattern`: read from disk when it matches the shards, else rebuilt (and,
  with `write_back`, written next to them when possible; `skip_corrupt` as for `build_index`).
  Returns (index dict, "loaded" | "built")."""
  files = records.list_record_files(file_pattern)
  path = index_path(file_pattern)
  reason = "it is missing"
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as handle:
        index = json.load(handle)
      reason = _stale_reason(index, files)
    except (OSError, ValueError) as error:
      reason = f"it does not read ({error})"
    if reason is None:
      return index, "loaded"
  logging.info("negatives index %s: rebuilding it from the shards (%s)", path, reason)
  index = build_index(file_pattern, skip_corrupt)
  if not write_back:
    return index, "built"
  try:
    write_index(index, path)
  except OSError as error:
    logging.warning("negatives index not written to %s (%s): the next start reads the shards "
                    "again", path, error)
  return index, "built"


def write_for_copies(source_files, output_files):
  """Indexes for shards copied record by record (the precomputed-feature copies): per split, the
  source shards' index (loaded or built) with the copies' names, sizes and fingerprint. Returns
  the paths written."""
  groups = {}
  for source, output in zip(source_files, output_files):
    sources, outputs = groups.setdefault(index_path(source), ([], []))
    sources.append(source)
    outputs.append(output)
  written = []
  for sources, outputs in groups.values():
    index, _ = load_or_build(",".join(sources), write_back=False)  # source folder untouched
    counts = {entry["name"]: entry["num_records"] for entry in index["files"]}
    index = dict(index, file_pattern=",".join(outputs), fingerprint=fingerprint(outputs),
                 files=[{"name": os.path.basename(path), "size": os.path.getsize(path),
                         "num_records": counts[os.path.basename(source)]}
                        for source, path in zip(sources, outputs)])
    written.append(write_index(index, index_path(outputs[0])))
  return written
