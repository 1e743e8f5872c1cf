"""`data.source: catalogue`: a retailer's CSV / JSON Lines of real photo files -> records,
candidate sets, pretraining and evaluation; every bad row counted by its reason."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import app
from PIL import Image

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.cli import prepare_data as prepare_data_cli
from fashionbert_tf.data import candidates as candidates_lib
from fashionbert_tf.data.sources import catalogue_file as catalogue_source
from fashionbert_tf.data import prepare
from fashionbert_tf.data import records
from fashionbert_tf.evaluation import evaluate
from fashionbert_tf.modeling import feature_precompute
from fashionbert_tf.training import pretrain
from fashionbert_tf.training import synthetic

from conftest import make_data_config

RED, BLUE = (230, 20, 20), (20, 20, 230)
COLOURS = {"red": RED, "blue": BLUE, "green": (20, 200, 20), "black": (10, 10, 10),
           "white": (250, 250, 250), "navy": (10, 10, 90)}
SUBCATEGORIES = {"TOPS": ["SHIRTS", "SWEATERS"], "DRESSES": ["LONG DRESSES", "SHORT DRESSES"]}


def _halves(width, height, left=RED, right=BLUE):
  array = np.zeros([height, width, 3], np.uint8)
  array[:, : width // 2] = left
  array[:, width // 2:] = right
  return Image.fromarray(array)


def _write_catalogue_images(root):
  """Writes the photos; returns the catalogue rows (dicts, `image` relative to `root`) and the
  expected skip reasons {reason: rows}."""
  os.makedirs(os.path.join(root, "img"), exist_ok=True)
  rows = []
  names = list(COLOURS)
  # 26 ordinary products (1-2 poses, 64-96 px JPEGs): 14 train, 12 validation.
  for product in range(26):
    colour = names[product % len(names)]
    category = "TOPS" if product % 2 else "DRESSES"
    subcategory = SUBCATEGORIES[category][(product // 2) % 2]
    for pose in range(1 + product % 2):
      size = 64 + 16 * ((product + pose) % 3)
      path = f"img/p{product}_{pose}.jpg"
      _halves(size, size, COLOURS[colour], COLOURS[names[(product + 1) % len(names)]]).save(
          os.path.join(root, path), quality=90)
      rows.append({"image": path, "text": f"{colour} {subcategory.lower()} with collar",
                   "product_id": str(1000 + product), "category": category,
                   "subcategory": subcategory,
                   "split": "train" if product < 14 else "validation"})
  # One product alone in its subcategory (same-subcategory negatives fall back for it).
  _halves(80, 80).save(os.path.join(root, "img/belt.png"))
  rows.append({"image": "img/belt.png", "text": "black leather belt", "product_id": "BELT-1",
               "category": "ACCESSORIES", "subcategory": "BELTS", "split": "train"})

  def add(path, text, product_id, split="train"):
    rows.append({"image": path, "text": text, "product_id": product_id, "category": "TOPS",
                 "subcategory": "SHIRTS", "split": split})

  # Formats and modes that must load.
  exif = Image.Exif()
  exif[0x0112] = 6   # stored sideways: displayed rotated 90 degrees clockwise
  _halves(128, 64).save(os.path.join(root, "img/rotated.jpg"), exif=exif, quality=95)
  add("img/rotated.jpg", "red and blue shirt, phone photo", "2001")
  _halves(96, 96).convert("CMYK").save(os.path.join(root, "img/cmyk.jpg"))
  add("img/cmyk.jpg", "Robe d'été rouge — coton 🌸 <br>légère &amp; fluide", "2002")
  rgba = np.zeros([72, 72, 4], np.uint8)
  rgba[:, :36] = (255, 0, 0, 255)   # opaque red left, transparent right
  Image.fromarray(rgba, "RGBA").save(os.path.join(root, "img/cutout.png"))
  add("img/cutout.png", "red cut-out shirt", "2003")
  _halves(64, 64).convert("L").save(os.path.join(root, "img/grey.png"))
  add("img/grey.png", "grey shirt", "2004")
  frames = [_halves(64, 64).convert("P"), _halves(64, 64, BLUE, RED).convert("P")]
  frames[0].save(os.path.join(root, "img/anim.gif"), save_all=True, append_images=frames[1:])
  add("img/anim.gif", "animated gif shirt", "2005")
  _halves(80, 80).save(os.path.join(root, "img/photo.webp"))
  add("img/photo.webp", "webp shirt", "2006")
  _halves(40, 128).save(os.path.join(root, "img/tall.png"))
  add("img/tall.png", "very tall photo", "2007")
  _halves(128, 40).save(os.path.join(root, "img/wide.jpg"))
  add("img/wide.jpg", 'wide photo, "quoted", with commas\nand a newline', "2008")
  # Bad rows: each is skipped and counted by its reason.
  with open(os.path.join(root, "img/good.jpg"), "wb") as handle:
    _halves(96, 96).save(handle, format="JPEG")
  with open(os.path.join(root, "img/good.jpg"), "rb") as handle:
    data = handle.read()
  with open(os.path.join(root, "img/truncated.jpg"), "wb") as handle:
    handle.write(data[: len(data) // 2])
  add("img/truncated.jpg", "truncated photo", "3001")
  with open(os.path.join(root, "img/notes.jpg"), "w", encoding="utf-8") as handle:
    handle.write("this is not an image\n")
  add("img/notes.jpg", "a text file named jpg", "3002")
  add("img/never_saved.jpg", "missing photo", "3003")
  _halves(20, 20).save(os.path.join(root, "img/tiny.png"))
  add("img/tiny.png", "thumbnail", "3004")
  add("img/good.jpg", "  <p> </p> ", "3005")                      # empty after cleaning
  add(rows[0]["image"], rows[0]["text"], rows[0]["product_id"])   # duplicate of row 0
  expected = {"truncated": 1, "undecodable": 1, "missing_file": 1, "too_small": 1,
              "empty_text": 1, "duplicate": 1}
  return rows, expected


COLUMNS = ("image", "text", "product_id", "category", "subcategory", "split")


def _write_jsonl(path, rows):
  with open(path, "w", encoding="utf-8") as handle:
    for row in rows:
      handle.write(json.dumps(row, ensure_ascii=False) + "\n")
  return path


def _write_csv(path, rows, columns=COLUMNS):
  with open(path, "w", encoding="utf-8", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
  return path


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("catalogue"))
  rows, expected = _write_catalogue_images(root)
  return {"root": root, "rows": rows, "expected": expected,
          "jsonl": _write_jsonl(os.path.join(root, "catalogue.jsonl"), rows),
          "csv": _write_csv(os.path.join(root, "catalogue.csv"), rows)}


def _data_config(root, catalogue_file, vocab_file, **overrides):
  values = dict(source="catalogue", catalogue_file=catalogue_file, num_candidates=8,
                num_image_queries=12, num_text_queries=12, candidate_fallback="fill",
                prepare_workers=2)
  values.update(overrides)
  return make_data_config(root, vocab_file, **values)


@pytest.fixture(scope="module")
def prepared(catalogue, tiny_vocab_file, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("prepared"))
  config = _data_config(out, catalogue["jsonl"], tiny_vocab_file)
  info = prepare.prepare_dataset(config)
  return {"config": config, "info": info}


def _records(config, split):
  rows = []
  for _, _, batch in records.iterate_parsed_batches(
      records.split_file_pattern(config.tfrecord_dir, split), records.FEATURE_SPEC):
    images = batch.pop("image")
    rows += [records.to_python(batch, i) | {"image": images[i]} for i in range(len(images))]
  return rows


def test_every_bad_row_is_skipped_and_counted_by_reason(catalogue, prepared):
  info = prepared["info"]
  skipped = info["catalogue"]["skipped_rows"]
  assert skipped["by_reason"] == catalogue["expected"]
  assert skipped["total"] == sum(catalogue["expected"].values())
  # The first rows of each reason are named by file and line (JSON Lines: line = row + 1).
  lines = {row["image"]: number + 1 for number, row in enumerate(catalogue["rows"])}
  assert skipped["first_rows"]["truncated"] == [
      f"{catalogue['jsonl']}:{lines['img/truncated.jpg']}: image "
      f"{os.path.join(catalogue['root'], 'img/truncated.jpg')}: cannot decode " +
      skipped["first_rows"]["truncated"][0].split("cannot decode ", 1)[1]]
  assert skipped["first_rows"]["duplicate"][0].startswith(
      f"{catalogue['jsonl']}:{len(catalogue['rows'])}: duplicate")
  num_good = len(catalogue["rows"]) - skipped["total"]
  written = {split: info["splits"][split]["num_records"] for split in records.SPLITS}
  assert sum(written.values()) == num_good
  assert written["validation"] == 12 + 6        # products 14..25, odd ones with 2 poses
  with open(os.path.join(prepared["config"].tfrecord_dir, "dataset_info.json")) as handle:
    assert json.load(handle)["catalogue"]["skipped_rows"]["by_reason"] == catalogue["expected"]


def test_records_hold_the_photos_as_the_model_sees_them(catalogue, prepared):
  train = {row["pose"]: row for row in _records(prepared["config"], "train")}
  for row in train.values():
    image = tf.io.decode_image(row["image"]).numpy()
    assert image.shape == (256, 256, 3)
  decoded = {pose: tf.io.decode_png(row["image"]).numpy() for pose, row in train.items()}
  # EXIF rotation applied: the stored left (red) half is displayed on top.
  rotated = decoded["rotated.jpg"]
  assert rotated[50, 128, 0] > 180 and rotated[205, 128, 2] > 180
  # Alpha composited on white; the tall photo padded with white left and right.
  assert (decoded["cutout.png"][128, 240] > 240).all()
  assert (decoded["tall.png"][128, 5] > 240).all() and decoded["tall.png"][128, 100, 0] > 180
  assert decoded["anim.gif"][128, 30, 0] > 180      # the first frame (red left)
  # Text cleaned like Fashion-Gen's: markup and entities gone, accents and emoji kept.
  texts = {row["product_id"]: row["description"] for row in train.values()}
  assert texts[2002] == "Robe d'été rouge — coton 🌸 légère & fluide"
  assert texts[2008] == 'wide photo, "quoted", with commas and a newline'
  # A non-numeric product_id becomes a stable 63-bit id; the original is the record's name.
  belt = train["belt.png"]
  assert belt["product_id"] == catalogue_source.product_id_number("BELT-1") > 0
  assert belt["name"] == "BELT-1"


def test_csv_and_jsonl_give_the_same_records(catalogue, prepared, tiny_vocab_file, tmp_path):
  config = _data_config(str(tmp_path), catalogue["csv"], tiny_vocab_file, num_shards=1)
  info = prepare.prepare_dataset(config)
  assert info["catalogue"]["skipped_rows"]["by_reason"] == catalogue["expected"]
  for split in records.SPLITS:
    ours = sorted((r["product_id"], r["description"], r["pose"]) for r in _records(config, split))
    jsonl = sorted((r["product_id"], r["description"], r["pose"])
                   for r in _records(prepared["config"], split))
    assert ours == jsonl
  # CSV line numbers count the newline inside the quoted title.
  skipped = info["catalogue"]["skipped_rows"]["first_rows"]
  assert skipped["truncated"][0].startswith(f"{catalogue['csv']}:")
  csv_line = int(skipped["truncated"][0].split(":")[1])
  jsonl_row = [r["image"] for r in catalogue["rows"]].index("img/truncated.jpg")
  assert csv_line == jsonl_row + 2 + 1   # the header, and the one title with a newline before


def test_candidates_fill_from_the_category_and_count_it(prepared):
  config = prepared["config"]
  sets = candidates_lib.load_candidates(config.candidates_file)
  # 12 validation products: 3 per subcategory, so every query needs candidates beyond it.
  assert sets["queries_beyond_subcategory"] == {"image_to_text": 12, "text_to_image": 12}
  assert prepared["info"]["candidates_beyond_subcategory"] == sets["queries_beyond_subcategory"]
  validation = {row["record_id"]: row for row in _records(config, "validation")}
  for entry in sets["image_to_text"]:
    query = validation[entry["query"]]
    others = [validation[c] for c in entry["candidates"] if c != entry["query"]]
    same_sub = sum(o["subcategory"] == query["subcategory"] for o in others)
    same_cat = sum(o["category"] == query["category"] for o in others)
    assert same_sub == 2 and same_cat == 5     # all 2 others of the subcategory, then category
    assert len({o["product_id"] for o in others}) == 8
  # Same-subcategory negatives: the belt has no other product in its subcategory.
  assert prepared["info"]["splits"]["train"]["products_alone_in_subcategory"] == 1


def test_precompute_pretrain_and_evaluate_run_on_a_prepared_catalogue(
    prepared, tiny_vocab_file, tmp_path, capsys):
  """configs/catalogue.yaml's flow: precompute (a bfloat16 store), pretrain, evaluate."""
  with open(tiny_vocab_file, encoding="utf-8") as handle:
    vocab_size = len(handle.read().split())
  model = dict(synthetic.tiny_model_overrides(feature_dim=8, vocab_size=vocab_size),
               num_layers=1, use_precomputed_features=True)
  train = dict(train_steps=3, global_batch_size=4, warmup_steps=1, learning_rate=1e-3,
               checkpoint_every_steps=100, validation_steps=1, validation_every_steps=3,
               log_every_steps=1, loss_weighting="fixed", model_dir=str(tmp_path / "run"))
  data = dict(prepared["config"].as_dict(), patch_feature_dtype="bfloat16",
              features_tfrecord_dir=str(tmp_path / "features"))
  config = experiment_config.load_config(None, [
      {"data": data, "model": model, "train": train,
       "eval": {"batch_size": 16, "images_per_step": 8}}])
  summary, _ = feature_precompute.precompute_with_statistics(
      config, os.path.join(config.data.tfrecord_dir, "*.tfrecord"), config.data.features_tfrecord_dir)
  assert sum(s["records"] for s in summary.values()) == sum(
      prepared["info"]["splits"][split]["num_records"] for split in records.SPLITS)
  summary = pretrain.run_pretraining(config)
  assert summary["final_step"] == 3
  assert np.isfinite(summary["train_logs"]["loss"])
  results = evaluate.run_evaluation(config)
  for direction in ("image_to_text", "text_to_image"):
    assert results[direction]["num_queries"] == 12
    assert results[direction]["num_candidates"] == 9
    assert 0.0 <= results[direction]["rank@1"] <= results[direction]["rank@10"] <= 1.0
  assert results["candidates_beyond_subcategory"] == {"image_to_text": 12, "text_to_image": 12}
  assert "12 image and 12 text queries of the candidate file have candidates from beyond" in (
      capsys.readouterr().out)


def test_seeded_split_keeps_a_product_together_and_follows_the_fraction():
  splits = [catalogue_source.assign_split(f"sku-{i}", seed=7, validation_fraction=0.2)
            for i in range(4000)]
  share = splits.count("validation") / len(splits)
  assert abs(share - 0.2) < 0.03                       # ~5 standard deviations
  again = [catalogue_source.assign_split(f"sku-{i}", seed=7, validation_fraction=0.2)
           for i in range(4000)]
  assert again == splits
  other_seed = [catalogue_source.assign_split(f"sku-{i}", seed=8, validation_fraction=0.2)
                for i in range(4000)]
  assert other_seed != splits


def test_rows_without_split_or_product_id(tmp_path, tiny_vocab_file):
  os.makedirs(tmp_path / "img")
  rows = []
  for i in range(30):
    _halves(64, 64, COLOURS["red"], COLOURS["navy"]).save(tmp_path / "img" / f"{i}.jpg")
    rows.append({"image": str(tmp_path / "img" / f"{i}.jpg"), "text": f"shirt number {i}",
                 "product_id": f"P{i // 2}" if i < 20 else ""})
  path = _write_csv(str(tmp_path / "c.csv"), rows, ("image", "text", "product_id"))
  config = _data_config(str(tmp_path / "out"), path, tiny_vocab_file, validation_fraction=0.5,
                        num_candidates=2, num_image_queries=2, num_text_queries=2)
  info = prepare.prepare_dataset(config)
  by_product = {}
  for split in records.SPLITS:
    for row in _records(config, split):
      by_product.setdefault(row["product_id"], set()).add(split)
  assert len(by_product) == 10 + 10     # P0..P9 (2 images each) and 10 one-image products
  assert all(len(splits) == 1 for splits in by_product.values())
  assert {s for splits in by_product.values() for s in splits} == {"train", "validation"}
  assert info["catalogue"]["skipped_rows"]["total"] == 0


def _prepare_cli(run_cli, config):
  overrides = ",".join(f"data.{k}={v}" for k, v in (
      ("source", "catalogue"), ("catalogue_file", config.catalogue_file),
      ("tfrecord_dir", config.tfrecord_dir), ("candidates_file", config.candidates_file),
      ("on_bad_row", config.on_bad_row)))
  run_cli(prepare_data_cli, ["fashionbert prepare-data", "--config=",
                             f"--params_override={overrides}"])


@pytest.mark.parametrize("name,content,message", [
    ("bad.jsonl", '{"image": "a.jpg", "text": "ok"}\n{"image": "b.jpg", "text": \n',
     "bad.jsonl:2: not JSON"),
    ("list.jsonl", '\n["a.jpg", "text"]\n', "list.jsonl:2: a JSON object per line expected"),
    ("notext.jsonl", '{"image": "a.jpg", "text": "ok"}\n{"image": "b.jpg"}\n',
     "notext.jsonl:2: no 'text' column"),
    ("noimage.csv", "picture,text\na.jpg,shirt\n", "noimage.csv:1: no 'image' column"),
    ("fields.csv", "image,text\na.jpg,red, shirt\n", "fields.csv:2: 3 fields, but the header"),
    ("split.csv", "image,text,split\na.jpg,shirt,test\n", "split.csv:2: split 'test'"),
    ("latin1.csv", "image,text\na.jpg,caf\xe9\n", "latin1.csv:2: not UTF-8"),
    ("catalogue.xlsx", "whatever", "cannot tell the format"),
    ("absent.csv", None, "catalogue file not found"),
])
def test_a_malformed_catalogue_is_one_line_naming_file_and_line(
    tmp_path, tiny_vocab_file, run_cli, name, content, message):
  path = str(tmp_path / name)
  if content is not None:
    with open(path, "wb") as handle:
      handle.write(content.encode("latin-1" if "latin1" in name else "utf-8"))
  config = _data_config(str(tmp_path / "out"), path, tiny_vocab_file)
  with pytest.raises(app.UsageError) as error:
    _prepare_cli(run_cli, config)
  assert message in str(error.value) and "\n" not in str(error.value)
  assert not os.path.exists(os.path.join(config.tfrecord_dir, "dataset_info.json"))


def test_on_bad_row_fail_stops_at_the_first_bad_row(catalogue, tmp_path, tiny_vocab_file,
                                                    run_cli):
  config = _data_config(str(tmp_path), catalogue["jsonl"], tiny_vocab_file, on_bad_row="fail")
  with pytest.raises(app.UsageError) as error:
    _prepare_cli(run_cli, config)
  line = [r["image"] for r in catalogue["rows"]].index("img/never_saved.jpg") + 1
  # The scan (text and paths) fails first: the missing file, before any image is decoded.
  assert f"{catalogue['jsonl']}:{line}: image file not found" in str(error.value)


def _record_set(pattern):
  return sorted((row["record_id"], row["product_id"], row["description"], row["pose"],
                 row["image"]) for row in _records_of(pattern))


def _records_of(pattern):
  rows = []
  for _, _, batch in records.iterate_parsed_batches(pattern, records.FEATURE_SPEC):
    images = batch.pop("image")
    rows += [records.to_python(batch, i) | {"image": images[i]} for i in range(len(images))]
  return rows


def test_the_tfds_catalogue_config_writes_the_same_records(catalogue, prepared, tmp_path):
  from fashionbert_tf.data.sources import fashion_gen_tfds  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(
      prepared["config"], source="tfds", tfds_config="catalogue",
      tfrecord_dir=str(tmp_path / "records"), tfds_data_dir=str(tmp_path / "tfds"),
      candidates_file=str(tmp_path / "records" / "candidates.json"))
  info = prepare.prepare_dataset(config)
  ours = prepared["info"]["catalogue"]["skipped_rows"]["by_reason"]
  scan_reasons = {r: n for r, n in ours.items() if r in ("empty_text", "duplicate",
                                                        "missing_file")}
  image_failures = sum(n for r, n in ours.items() if r not in scan_reasons)
  assert info["catalogue"]["skipped_rows"]["by_reason"] == dict(
      scan_reasons, image_failed=image_failures)
  for split in records.SPLITS:
    assert _record_set(fashion_gen_tfds.split_file_pattern(config, split)) == _record_set(
        records.split_file_pattern(prepared["config"].tfrecord_dir, split))
  with open(prepared["config"].candidates_file) as a, open(config.candidates_file) as b:
    assert json.load(a) == json.load(b)


def test_a_tfds_catalogue_is_rebuilt_when_its_file_changes(tmp_path, tiny_vocab_file):
  os.makedirs(tmp_path / "img")
  rows = []
  for i in range(6):
    _halves(48, 64).save(tmp_path / "img" / f"{i}.png")
    rows.append({"image": f"img/{i}.png", "text": f"shirt {i}", "product_id": str(i),
                 "split": "train" if i < 3 else "validation"})
  path = _write_csv(str(tmp_path / "shop.csv"), rows[:5], ("image", "text", "product_id", "split"))
  config = _data_config(str(tmp_path / "out"), path, tiny_vocab_file, source="tfds",
                        tfds_config="catalogue", tfds_data_dir=str(tmp_path / "tfds"),
                        num_candidates=1, num_image_queries=2, num_text_queries=2)
  first = prepare.prepare_dataset(config)
  assert first["tfds_config"] == "catalogue_shop"
  assert first["splits"]["validation"]["num_records"] == 2
  again = prepare.prepare_dataset(config)   # unchanged: TFDS reuses the build
  assert again["splits"]["validation"]["num_records"] == 2
  _write_csv(path, rows, ("image", "text", "product_id", "split"))
  os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
  rebuilt = prepare.prepare_dataset(config)
  assert rebuilt["splits"]["validation"]["num_records"] == 3


def test_on_bad_row_fail_on_an_image_leaves_no_half_written_shard(catalogue, tmp_path,
                                                                  tiny_vocab_file):
  rows = [dict(row, image=os.path.join(catalogue["root"], row["image"]))
          for row in catalogue["rows"][:-1] if row["image"].startswith("img/p")]  # no duplicate
  bad = len(rows) // 2
  rows.insert(bad, dict(rows[0], image=os.path.join(catalogue["root"], "img/truncated.jpg"),
                        product_id="77"))
  path = _write_jsonl(str(tmp_path / "one_bad.jsonl"), rows)
  config = _data_config(str(tmp_path / "out"), path, tiny_vocab_file, on_bad_row="fail",
                        num_shards=1)
  with pytest.raises(catalogue_source.BadRowError) as error:
    prepare.prepare_dataset(config)
  assert error.value.reason == "truncated"
  assert str(error.value).startswith(f"{path}:{bad + 1}: image ")
  assert os.listdir(config.tfrecord_dir) == []
