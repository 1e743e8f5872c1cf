"""The `fashion_gen` catalogue config built with Apache Beam (DirectRunner, several tasks) writes
the records `data.source: catalogue` writes, and counts the skipped rows."""

import dataclasses
import json
import os

import numpy as np
from PIL import Image

from fashionbert_tf.data.sources import catalogue_file as catalogue_source
from fashionbert_tf.configs import data as data_config_lib
from fashionbert_tf.data import prepare
from fashionbert_tf.data import records
from fashionbert_tf.data.sources import fashion_gen_tfds


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


def test_beam_build_matches_prepare_data(tmp_path, monkeypatch):
  path = _write_catalogue(str(tmp_path))
  data_config = data_config_lib.DataConfig(
      source="catalogue", catalogue_file=path, tfrecord_dir=str(tmp_path / "records"),
      candidates_file=str(tmp_path / "records" / "candidates.json"), num_shards=2,
      validation_fraction=0.5, image_format="jpeg", prepare_workers=2, num_candidates=3,
      num_text_queries=4, num_image_queries=4, candidate_fallback="fill")
  info = prepare.prepare_dataset(data_config)
  assert info["catalogue"]["skipped_rows"]["by_reason"] == {
      "duplicate": 1, "empty_text": 1, "missing_file": 1, "undecodable": 1}

  monkeypatch.setattr(catalogue_source, "ROWS_PER_TASK", 5)   # 22 rows: 5 Beam tasks
  tfds_config = dataclasses.replace(
      data_config, source="tfds", tfds_config="catalogue",
      tfds_data_dir=str(tmp_path / "tfds"), tfrecord_dir=str(tmp_path / "beam_records"),
      candidates_file=str(tmp_path / "beam_records" / "candidates.json"))
  beam_info = prepare.prepare_dataset(
      tfds_config, beam_options=fashion_gen_tfds.beam_pipeline_options("runner=DirectRunner"))
  builder = fashion_gen_tfds.prepared_builder(tfds_config)
  assert builder.builder_config.rows_per_task == 5
  # Text and path reasons as prepare-data counts them; the undecodable image as image_failed.
  assert beam_info["catalogue"]["skipped_rows"]["by_reason"] == {
      "duplicate": 1, "empty_text": 1, "missing_file": 1, "image_failed": 1}
  for split in records.SPLITS:
    assert _record_set(fashion_gen_tfds.split_file_pattern(tfds_config, split)) == _record_set(
        records.split_file_pattern(data_config.tfrecord_dir, split)), split
    assert beam_info["splits"][split]["num_records"] == info["splits"][split]["num_records"]
  with open(data_config.candidates_file) as ours, open(tfds_config.candidates_file) as beams:
    assert json.load(ours) == json.load(beams)
  assert len(catalogue_source.scan_catalogue(path, rows_per_task=5).task_ranges()) == 5
