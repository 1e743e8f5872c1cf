"""The `fashion_gen` catalogue config built with Apache Beam (DirectRunner, several tasks) writes
the records `data.source: catalogue` writes, and counts the skipped rows."""

import json
import os

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from fashionbert_tf.data import catalogue_source
from fashionbert_tf.data import config as data_config_lib
from fashionbert_tf.data import fashion_gen_builder
from fashionbert_tf.data import prepare
from fashionbert_tf.data import records


def _write_catalogue(root):
  """A JSON Lines catalogue of 22 rows: 18 photos of 12 products, a text file named .jpg, a
  missing file, an empty title and a duplicate row."""
  os.makedirs(os.path.join(root, "img"))
  rng = np.random.default_rng(0)
  rows = []
  for product in range(12):
    for pose in range(1 + product % 2):
      path = f"img/{product}_{pose}.{('jpg', 'png', 'webp')[product % 3]}"
      Image.fromarray(rng.integers(0, 255, [64, 48 + 8 * pose, 3], np.uint8)).save(
          os.path.join(root, path))
      rows.append({"image": path, "text": f"shirt {product} café 🌸", "product_id": product,
                   "category": "TOPS", "subcategory": ("SHIRTS", "SWEATERS")[product % 2]})
  with open(os.path.join(root, "img/notes.jpg"), "w") as handle:
    handle.write("not an image")
  rows += [{"image": "img/notes.jpg", "text": "text file", "product_id": 90},
           {"image": "img/missing.jpg", "text": "missing", "product_id": 91},
           {"image": "img/0_0.jpg", "text": " ", "product_id": 92},
           dict(rows[3])]
  path = os.path.join(root, "catalogue.jsonl")
  with open(path, "w", encoding="utf-8") as handle:
    handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
  return path


def _record_set(pattern):
  rows = []
  for _, _, batch in records.iterate_parsed_batches(pattern, records.FEATURE_SPEC):
    rows += [(int(batch["record_id"][i]), int(batch["product_id"][i]),
              batch["description"][i].decode(), batch["image"][i])
             for i in range(len(batch["record_id"]))]
  return sorted(rows)


def test_beam_build_matches_prepare_data(tmp_path):
  path = _write_catalogue(str(tmp_path))
  data_config = data_config_lib.DataConfig(
      source="catalogue", catalogue_file=path, tfrecord_dir=str(tmp_path / "records"),
      candidates_file=str(tmp_path / "records" / "candidates.json"), num_shards=2,
      validation_fraction=0.3, image_format="jpeg", prepare_workers=2)
  info = prepare.prepare_dataset(data_config)
  assert info["catalogue"]["skipped_rows"]["by_reason"] == {
      "duplicate": 1, "empty_text": 1, "missing_file": 1, "undecodable": 1}

  config = fashion_gen_builder.catalogue_config(
      path, validation_fraction=0.3, seed=data_config.seed, image_format="jpeg",
      rows_per_task=5)   # 22 rows: 5 Beam tasks
  builder = fashion_gen_builder.FashionGen(config=config, data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      num_shards=2, beam_options=tfds.core.lazy_imports.apache_beam.options.pipeline_options
      .PipelineOptions(runner="DirectRunner")))
  metadata = builder.info.metadata
  skipped = {reason: metadata["skipped_rows"]["train"].get(reason, 0) +
             metadata["skipped_rows"]["validation"].get(reason, 0)
             for reason in ("duplicate", "empty_text", "missing_file")}
  assert skipped == {"duplicate": 1, "empty_text": 1, "missing_file": 1}
  # The undecodable image is the one row the scan kept but no worker wrote.
  assert sum(metadata["kept_rows"].values()) - sum(
      builder.info.splits[split].num_examples for split in records.SPLITS) == 1
  for split in records.SPLITS:
    pattern = os.path.join(os.fspath(builder.data_dir),
                           f"{fashion_gen_builder.NAME}-{split}.tfrecord-?????-of-?????")
    assert _record_set(pattern) == _record_set(
        records.split_file_pattern(data_config.tfrecord_dir, split)), split
  assert len(catalogue_source.scan_catalogue(path, rows_per_task=5).task_ranges()) == 5
