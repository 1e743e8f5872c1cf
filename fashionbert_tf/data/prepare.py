"""prepare-data: Fashion-Gen HDF5 (train + validation) -> sharded TFRecords + candidate sets.

For each split, rows are streamed from the HDF5 file in chunks (`data.hdf5_chunk_size`), their text
cleaned (`fashion_gen_hdf5.clean_text`), their image encoded (`data.image_format`) and written to
`<data.tfrecord_dir>/{split}-NNNNN-of-NNNNN.tfrecord` (`data.num_shards` shards, consecutive rows
per shard; schema in `records.py`). Rows with an empty description are skipped and counted
(`data.on_bad_description`, see `sources/fashion_gen_hdf5.py`); the counts are logged at the end and
stored in `<data.tfrecord_dir>/dataset_info.json`. Then the fixed retrieval candidate sets are built from the
validation split and saved to `data.candidates_file` (`candidates.py`).

With `data.source: tfds` prepare-data is a thin wrapper over the `fashion_gen` TensorFlow Datasets
builder (`sources/fashion_gen_tfds_builder.py`, `sources/fashion_gen_tfds.py`): the builder streams
the same HDF5 rows with the same cleaning into TFDS's folder (`data.tfds_data_dir`), and prepare-data then writes the
same `dataset_info.json` (into `data.tfrecord_dir`, counts from the builder's metadata), negatives
index and retrieval candidate sets from TFDS's validation shards.

With `data.source: catalogue` the rows come from a retailer's CSV / JSON Lines table of photos and
texts (`data.catalogue_file`; `catalogue_prepare.py`) and end in the same records, negatives index,
candidate sets and dataset_info.json.
"""

import concurrent.futures
import glob
import itertools
import json
import os
import time

from absl import logging

from fashionbert_tf.data import candidates as candidates_lib
from fashionbert_tf.data import negatives_index
from fashionbert_tf.data import records
from fashionbert_tf.data.sources import catalogue_prepare
from fashionbert_tf.data.sources import fashion_gen_hdf5

import tensorflow as tf

DATASET_INFO_FILE = "dataset_info.json"


class _Progress:
  """absl-logged progress: count, percentage, rate; at most one line per `interval` seconds."""

  def __init__(self, label, total, interval=5.0):
    self.label, self.total, self.interval = label, max(total, 1), interval
    self.start = self.last = time.time()

  def update(self, done, force=False):
    now = time.time()
    if force or now - self.last >= self.interval:
      self.last = now
      rate = done / max(now - self.start, 1e-9)
      logging.info("%s: %d/%d rows (%.0f%%), %.0f rows/s", self.label, done, self.total,
                   100.0 * done / self.total, rate)


def _remove_old_shards(directory, split):
  for path in glob.glob(os.path.join(directory, f"{split}-*-of-*.tfrecord")):
    os.remove(path)


def convert_split(hdf5_path, directory, split, num_shards, image_format="png", jpeg_quality=95,
                  chunk_size=256, on_bad_description="skip"):
  """Writes one split's shards. Returns (ReadReport, list of metadata dicts of written rows)."""
  if num_shards < 1:
    raise ValueError(f"data.num_shards must be >= 1, got {num_shards}")
  num_rows = fashion_gen_hdf5.count_rows(hdf5_path)   # validates the schema before any writing
  os.makedirs(directory, exist_ok=True)
  _remove_old_shards(directory, split)
  report = fashion_gen_hdf5.ReadReport(hdf5_path)
  progress = _Progress(f"{split} ({os.path.basename(hdf5_path)})", num_rows)
  metadata = []
  bounds = [num_rows * i // num_shards for i in range(num_shards + 1)]
  # Image encoding (the slow part) runs on a few threads; rows are written in source order.
  with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
    for shard in range(num_shards):
      path = records.shard_path(directory, split, shard, num_shards)
      rows = fashion_gen_hdf5.iterate_rows(hdf5_path, chunk_size, on_bad_description, report,
                                          start=bounds[shard], stop=bounds[shard + 1])
      with tf.io.TFRecordWriter(path + ".tmp") as writer:
        while True:
          chunk = list(itertools.islice(rows, 64))
          if not chunk:
            break
          encoded = pool.map(
              lambda row: records.encode_image(row["image"], image_format, jpeg_quality), chunk)
          for row, image_bytes in zip(chunk, encoded):
            writer.write(records.make_example(row, image_bytes).SerializeToString())
            metadata.append({key: row[key] for key in
                             ("record_id", "product_id", "category", "subcategory")})
          progress.update(report.num_rows)
      os.replace(path + ".tmp", path)
  progress.update(report.num_rows, force=True)
  return report, metadata


def prepare_dataset(data_config, beam_options=None):
  """Runs prepare-data for `data_config` (a `DataConfig`). Returns the dataset-info dict.

  beam_options: with `data.source: tfds`, Beam `PipelineOptions` to build the TFDS dataset with
  (`fashion_gen_tfds.beam_pipeline_options`); None = TFDS's plain generator.

  Raises:
    FileNotFoundError / FashionGenFormatError: a missing or malformed HDF5 file (named).
  """
  if data_config.source == "tfds":
    return prepare_with_tfds(data_config, beam_options)
  if data_config.source == "catalogue":
    info, validation_metadata = catalogue_prepare.convert_catalogue(data_config)
    for split in records.SPLITS:
      info["splits"][split]["negatives_index"] = negatives_index.write_for(
          info["splits"][split]["file_pattern"])
    return _finish(data_config, info, validation_metadata)
  directory = data_config.tfrecord_dir
  info = {"image_format": data_config.image_format, "num_shards": data_config.num_shards,
          "splits": {}}
  validation_metadata = None
  for split, hdf5_path in (("train", data_config.train_hdf5),
                           ("validation", data_config.validation_hdf5)):
    start = time.time()
    report, metadata = convert_split(
        hdf5_path, directory, split, data_config.num_shards, data_config.image_format,
        data_config.jpeg_quality, data_config.hdf5_chunk_size, data_config.on_bad_description)
    info["splits"][split] = {
        "source": hdf5_path, "num_rows": report.num_rows, "num_records": report.num_yielded,
        "num_products": len({m["product_id"] for m in metadata}),
        "skipped_empty_description": report.skipped_empty_description,
        "first_skipped_rows": report.first_skipped_rows,
        "file_pattern": records.split_file_pattern(directory, split)}
    logging.info("%s done in %.1f s: %s", split, time.time() - start, report.summary())
    info["splits"][split]["negatives_index"] = negatives_index.write_for(
        records.split_file_pattern(directory, split))
    if split == "validation":
      validation_metadata = metadata
  return _finish(data_config, info, validation_metadata)


def _finish(data_config, info, validation_metadata):
  """Candidate sets from the validation rows' metadata, then dataset_info.json and the log."""
  directory = data_config.tfrecord_dir
  os.makedirs(directory, exist_ok=True)
  for split_info in info["splits"].values():
    # Products with no other product in their (category, subcategory): same-subcategory
    # negatives fall back to any product for them (data/pairing.py).
    alone = negatives_index.products_alone_in_group(split_info.get("negatives_index"))
    if alone is not None:
      split_info["products_alone_in_subcategory"] = alone
  try:
    candidate_sets = candidates_lib.build_candidates(
        validation_metadata, data_config.num_image_queries, data_config.num_text_queries,
        data_config.num_candidates, data_config.seed, fallback=data_config.candidate_fallback)
    candidates_lib.save_candidates(candidate_sets, data_config.candidates_file)
    info["candidates_file"] = data_config.candidates_file
    info["candidates_beyond_subcategory"] = candidate_sets["queries_beyond_subcategory"]
    logging.info("retrieval candidate sets -> %s: %d image queries, %d text queries, %d "
                 "candidates each + ground truth; pools %s", data_config.candidates_file,
                 len(candidate_sets["image_to_text"]), len(candidate_sets["text_to_image"]),
                 data_config.num_candidates, candidate_sets["pool_counts"])
    logging.info("candidate sets: %s queries needed candidates beyond their subcategory "
                 "(data.candidate_fallback=%s)", candidate_sets["queries_beyond_subcategory"],
                 data_config.candidate_fallback)
  except candidates_lib.NotEnoughProductsError as error:
    info["candidates_file"] = None
    info["candidates_error"] = str(error)
    if os.path.exists(data_config.candidates_file):
      os.remove(data_config.candidates_file)   # never leave stale sets from older data
    logging.warning("retrieval candidate sets NOT written: %s", error)
  with open(os.path.join(directory, DATASET_INFO_FILE), "w", encoding="utf-8") as handle:
    json.dump(info, handle, indent=2)
  for split, split_info in info["splits"].items():
    if "skipped_rows" in split_info:   # a catalogue: skips by reason (empty text, missing file...)
      skipped = split_info["skipped_rows"]["total"]
      why = f"; {skipped} rows SKIPPED {split_info['skipped_rows']['by_reason']}"
    else:
      skipped = split_info["skipped_empty_description"]
      why = (f"; {skipped} rows SKIPPED (empty description), first rows "
             f"{split_info['first_skipped_rows']}")
    logging.info("%s: %d records written from %d rows%s", split, split_info["num_records"],
                 split_info["num_rows"], why if skipped else "")
    if split_info.get("products_alone_in_subcategory"):
      logging.info("%s: %d of %d products are alone in their subcategory (their negatives come "
                   "from any other product)", split, split_info["products_alone_in_subcategory"],
                   split_info["num_products"])
  if "catalogue" in info:
    skipped = info["catalogue"]["skipped_rows"]
    logging.info("catalogue %s: %d rows -> %s records; %d rows skipped %s%s",
                 info["catalogue"]["file"], info["catalogue"]["num_rows"],
                 {split: s["num_records"] for split, s in info["splits"].items()},
                 skipped["total"], skipped["by_reason"],
                 "; first: " + "; ".join(row for rows in skipped.get("first_rows", {}).values()
                                         for row in rows[:2]) if skipped["total"] else "")
  return info


def _tfds_validation_metadata(file_pattern):
  """[{record_id, product_id, category, subcategory}] of TFDS's validation shards, in order."""
  metadata = []
  for _, _, batch in records.iterate_parsed_batches(file_pattern):
    for index in range(len(batch["record_id"])):
      row = records.to_python(batch, index)
      metadata.append({key: row[key] for key in
                       ("record_id", "product_id", "category", "subcategory")})
  return metadata


def prepare_with_tfds(data_config, beam_options=None):
  """prepare-data with `data.source: tfds`: build `fashion_gen` (TFDS reuses a prepared one), then
  the negatives index, candidate sets and dataset_info.json as with the TFRecord writer.

  `data.on_bad_description: error` -> `FashionGenFormatError` after the build when the builder
  skipped rows (the builder itself always skips and counts them in its metadata).
  """
  # Lazy: importing tensorflow_datasets adds ~10% to TensorFlow's own import time (python
  # -X importtime); only data.source=tfds needs it.
  from fashionbert_tf.data.sources import fashion_gen_tfds  # pylint: disable=g-import-not-at-top
  start = time.time()
  builder = fashion_gen_tfds.download_and_prepare(data_config, beam_options=beam_options)
  metadata = builder.info.metadata
  logging.info("TFDS fashion_gen/%s %s in %s (%.1f s)", builder.builder_config.name,
               builder.version, builder.data_dir, time.time() - start)
  info = {"source": "tfds", "tfds_data_dir": fashion_gen_tfds.data_dir(data_config),
          "tfds_config": builder.builder_config.name, "tfds_version": str(builder.version),
          "image_format": builder.builder_config.image_format,
          "num_shards": data_config.num_shards, "splits": {}}
  validation_metadata = None
  for split in records.SPLITS:
    skipped = int(metadata["skipped_empty_description"][split])
    first_skipped = list(metadata["first_skipped_rows"][split])
    source = metadata["source_files"][split]
    if skipped and data_config.on_bad_description == "error":
      raise fashion_gen_hdf5.FashionGenFormatError(
          f"{source}: {skipped} row(s) have an empty description after decoding and cleaning "
          f"(first rows {first_skipped}); data.on_bad_description=error")
    pattern = fashion_gen_tfds.split_file_pattern(data_config, split)
    # Written beside TFDS's shards (reused when current); one entry per distinct product.
    index, _ = negatives_index.load_or_build(pattern)
    info["splits"][split] = {
        "source": source, "num_rows": int(metadata["num_rows"][split]),
        "num_records": int(builder.info.splits[split].num_examples),
        "num_products": len(index["products"]),
        "skipped_empty_description": skipped, "first_skipped_rows": first_skipped,
        "file_pattern": pattern,
        "negatives_index": negatives_index.index_path(pattern)}
    if builder.builder_config.catalogue:   # the scan's counts, and the images that failed
      info["splits"][split]["skipped_rows"] = _add_catalogue_skips(
          info, data_config, metadata, split, int(builder.info.splits[split].num_examples))
    if split == "validation":
      validation_metadata = _tfds_validation_metadata(pattern)
  return _finish(data_config, info, validation_metadata)


def _add_catalogue_skips(info, data_config, metadata, split, num_examples):
  """Adds a split to dataset_info's `catalogue` of a TFDS-built catalogue and returns the split's
  `skipped_rows`: the
  builder's scan counts by reason; rows whose image failed to load in a worker are `image_failed`
  (Beam workers do not report back their reasons; `data.source: catalogue` does)."""
  by_reason = dict(metadata["skipped_rows"][split])
  failed = int(metadata["kept_rows"][split]) - num_examples
  if failed:
    by_reason["image_failed"] = failed
  catalogue = info.setdefault("catalogue", {
      "file": os.path.abspath(data_config.catalogue_file), "num_rows": 0,
      "image_resize": data_config.image_resize, "skipped_rows": {
          "total": 0, "by_reason": {},
          "first_rows": dict(metadata["skipped_rows"].get("first_rows", {}))}})
  catalogue["num_rows"] += int(metadata["num_rows"][split])
  totals = catalogue["skipped_rows"]
  for reason, count in by_reason.items():
    totals["by_reason"][reason] = totals["by_reason"].get(reason, 0) + int(count)
    totals["total"] += int(count)
  return {"total": sum(by_reason.values()), "by_reason": by_reason}


def load_dataset_info(tfrecord_dir):
  """The `dataset_info.json` prepare-data wrote (record counts per split), or None."""
  path = os.path.join(tfrecord_dir, DATASET_INFO_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as handle:
    return json.load(handle)
