"""prepare-data with `data.source: catalogue`: a CSV / JSON Lines catalogue -> the same records.

Writes what prepare-data writes for Fashion-Gen (`prepare.py`): `data.num_shards` shards per split
in `data.tfrecord_dir` (consecutive usable rows per shard, the schema of `records.py`), each split's
negatives index, the retrieval candidate sets and `dataset_info.json`, so precompute, pretrain,
evaluate, export, finetune and search run on a catalogue unchanged.

Pass 1 (`catalogue_source.scan_catalogue`) reads the table alone (format errors stop the run before
anything is written; rows per split give the shard bounds and the ETA); pass 2 streams the rows
again, loads and encodes their images on `data.prepare_workers` threads and writes both splits in
one read of the file. dataset_info.json gets, besides the Fashion-Gen keys, `catalogue`: the file,
its row count, the resize policy and the skipped rows by reason (with the first few named
`file:line`); each split's entry has its own `skipped_rows` counts.
"""

import os
import time

from absl import logging

from fashionbert_tf.data.sources import catalogue_file as catalogue_source
from fashionbert_tf.data import records

import tensorflow as tf

SPLITS = catalogue_source.SPLITS


class _Progress:
  """absl-logged rows read, rows/s and ETA; at most one line per `interval` seconds."""

  def __init__(self, label, total, interval=5.0):
    self.label, self.total, self.interval = label, max(total, 1), interval
    self.start = self.last = time.time()
    self.done = 0

  def step(self):
    self.done += 1
    now = time.time()
    if now - self.last >= self.interval:
      self.log(now)

  def log(self, now=None):
    now = now or time.time()
    self.last = now
    rate = self.done / max(now - self.start, 1e-9)
    eta = (self.total - self.done) / max(rate, 1e-9)
    logging.info("%s: %d/%d rows (%.0f%%), %.1f rows/s, ETA %.0f s", self.label, self.done,
                 self.total, 100.0 * self.done / self.total, rate, eta)


class _SplitWriter:
  """One split's shards: consecutive records, shard k gets records [bounds[k], bounds[k+1]) of
  the split's rows the scan kept (rows whose image then fails leave the last shards shorter)."""

  def __init__(self, directory, split, num_rows, num_shards):
    self.directory, self.split, self.num_shards = directory, split, num_shards
    self.bounds = [num_rows * i // num_shards for i in range(num_shards + 1)]
    self.shard = -1
    self.writer = None
    self.num_records = 0
    self.products = set()

  def _open(self, shard):
    self.close()
    self.shard = shard
    path = records.shard_path(self.directory, self.split, shard, self.num_shards)
    self.writer = tf.io.TFRecordWriter(path + ".tmp")

  def write(self, example, product_id):
    shard = max(k for k in range(self.num_shards) if self.bounds[k] <= self.num_records)
    while self.shard < shard:
      self._open(self.shard + 1)
    self.writer.write(example.SerializeToString())
    self.num_records += 1
    self.products.add(product_id)

  def close(self):
    if self.writer is not None:
      self.writer.close()
      path = records.shard_path(self.directory, self.split, self.shard, self.num_shards)
      os.replace(path + ".tmp", path)
      self.writer = None

  def abort(self):
    """Closes and deletes the shard being written (a failed run leaves no half shard)."""
    if self.writer is not None:
      self.writer.close()
      self.writer = None
      path = records.shard_path(self.directory, self.split, self.shard, self.num_shards)
      if os.path.exists(path + ".tmp"):
        os.remove(path + ".tmp")

  def finish(self):
    """Closes the last shard and writes every shard no row reached (empty ones)."""
    while self.shard < self.num_shards - 1:
      self._open(self.shard + 1)
    self.close()


def convert_catalogue(data_config):
  """Pass 1 and pass 2 (module docstring). Returns (info dict of the splits + catalogue,
  the validation rows' metadata for the candidate sets)."""
  path = data_config.catalogue_file
  if data_config.num_shards < 1:
    raise ValueError(f"data.num_shards must be >= 1, got {data_config.num_shards}")
  start = time.time()
  scan = catalogue_source.scan_catalogue(
      path, data_config.seed, data_config.validation_fraction, data_config.on_bad_row)
  logging.info("catalogue %s: %d rows (train %d, validation %d usable by their text and path; "
               "%s) scanned in %.1f s", path, scan.num_rows, scan.split_rows["train"],
               scan.split_rows["validation"], scan.report.summary(), time.time() - start)
  for split in SPLITS:
    if not scan.split_rows[split]:
      logging.warning("catalogue %s: no usable row in the %s split (data.validation_fraction = "
                      "%s, or the split column)", path, split, data_config.validation_fraction)
  directory = data_config.tfrecord_dir
  os.makedirs(directory, exist_ok=True)
  for split in SPLITS:
    for old in tf.io.gfile.glob(os.path.join(directory, f"{split}-*-of-*.tfrecord")):
      os.remove(old)
  writers = {split: _SplitWriter(directory, split, scan.split_rows[split], data_config.num_shards)
             for split in SPLITS}
  report = scan.report
  validation_metadata = []
  progress = _Progress(f"catalogue {os.path.basename(path)}", scan.num_rows)
  image_start = time.time()
  examples = catalogue_source.iterate_examples(
      path, scan, data_config.image_resize, data_config.image_format, data_config.jpeg_quality,
      data_config.on_bad_row, report, data_config.seed, data_config.validation_fraction,
      num_workers=data_config.prepare_workers, on_row=progress.step)
  try:
    for row, encoded in examples:
      writers[row.split].write(
          records.make_example(catalogue_source.record_fields(row), encoded), row.product_id)
      if row.split == "validation":
        validation_metadata.append(row.metadata())
    for writer in writers.values():
      writer.finish()
  finally:
    for writer in writers.values():
      writer.abort()   # after `finish` nothing is open; on an error the open shard goes
  progress.log()
  elapsed = time.time() - image_start
  logging.info("catalogue images: %d records in %.1f s (%.1f rows/s, %s, resize %s, %d workers)",
               sum(w.num_records for w in writers.values()), elapsed,
               scan.num_rows / max(elapsed, 1e-9), data_config.image_format,
               data_config.image_resize, data_config.prepare_workers or os.cpu_count() or 1)
  info = {"source": "catalogue", "image_format": data_config.image_format,
          "num_shards": data_config.num_shards, "splits": {},
          "catalogue": {"file": os.path.abspath(path), "num_rows": scan.num_rows,
                        "image_resize": data_config.image_resize,
                        "validation_fraction": data_config.validation_fraction,
                        "seed": data_config.seed, "skipped_rows": report.as_dict()}}
  for split in SPLITS:
    writer = writers[split]
    skipped = report.as_dict(split)
    info["splits"][split] = {
        "source": os.path.abspath(path),
        "num_rows": writer.num_records + skipped["total"],
        "num_records": writer.num_records, "num_products": len(writer.products),
        "skipped_empty_description": skipped["by_reason"].get("empty_text", 0),
        "first_skipped_rows": [],
        "skipped_rows": skipped,
        "file_pattern": records.split_file_pattern(directory, split)}
  return info, validation_metadata
