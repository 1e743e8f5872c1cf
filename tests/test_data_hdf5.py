"""Fashion-Gen HDF5 reading: text cleaning, the toy generator's schema, bad inputs."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from fashionbert_tf.data.sources import fashion_gen_hdf5 as fashiongen_hdf5
from fashionbert_tf.data.toy import fashion_gen as toy_fashiongen


def test_clean_text_handles_markup_entities_encodings_and_whitespace():
  assert fashiongen_hdf5.clean_text(b"<p>Long sleeve shirt.<br>Button closure.</p>") == (
      "Long sleeve shirt. Button closure.")
  assert fashiongen_hdf5.clean_text(b"Black &amp; white&nbsp;stripes &#233;") == (
      "Black & white stripes \u00e9")
  assert fashiongen_hdf5.clean_text(b"doubly &amp;amp; escaped") == "doubly & escaped"
  # cp1252 bytes (en dash, curly quotes) are not UTF-8.
  assert fashiongen_hdf5.clean_text("a \u2013 \u201cb\u201d".encode("cp1252")) == (
      "a \u2013 \u201cb\u201d")
  # latin-1 byte 0x81 is undefined in cp1252: falls back to latin-1, control char dropped.
  assert fashiongen_hdf5.clean_text(b"caf\xe9 \x81x") == "caf\u00e9 x"
  assert fashiongen_hdf5.clean_text(b"  a \t\n b\x00\x00") == "a b"
  assert fashiongen_hdf5.clean_text(np.array([b"utf-8 caf\xc3\xa9"])) == "utf-8 caf\u00e9"
  assert fashiongen_hdf5.clean_text(b" <br> &nbsp; ") == ""


def test_toy_generator_writes_fashiongen_schema(toy_data_config):
  with h5py.File(toy_data_config.train_hdf5, "r") as handle:
    for name in fashiongen_hdf5.REQUIRED_DATASETS + (
        "input_concat_description", "input_gender", "input_composition", "input_department",
        "input_msrpUSD", "input_season", "index"):
      assert name in handle, name
    images = handle["input_image"]
    assert images.dtype == np.uint8 and images.shape[1:] == (256, 256, 3)
    num_rows = images.shape[0]
    assert handle["input_description"].shape == (num_rows, 1)
    assert handle["input_description"].dtype.kind == "S"     # fixed-length bytes
    product_ids = handle["input_productID"][:, 0]
    poses_per_product = np.unique(product_ids, return_counts=True)[1]
    assert poses_per_product.min() >= 1 and poses_per_product.max() <= 6
    assert len(poses_per_product) == 24
    # Different products look different, poses of one product are not byte-identical copies.
    assert not np.array_equal(images[0], images[num_rows - 1])


def test_descriptions_state_the_drawn_attributes():
  products = toy_fashiongen.make_products(40, seed=5)
  for product in products:
    text = toy_fashiongen.describe(product).lower()
    assert product.colour in text
    assert toy_fashiongen.GARMENT_WORDS[product.shape] in text
    if product.pattern != "solid":
      assert product.pattern in text and product.second_colour in text
    if product.sleeve:
      assert product.sleeve in text
    if product.neckline:
      assert product.neckline in text


def test_same_seed_same_data_and_patterns_are_drawn(tmp_path):
  products = toy_fashiongen.make_products(3, seed=1)
  rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
  image_a = toy_fashiongen.draw_product_image(products[0], 0, rng_a)
  image_b = toy_fashiongen.draw_product_image(products[0], 0, rng_b)
  np.testing.assert_array_equal(image_a, image_b)
  striped = toy_fashiongen.Product(**{**products[0].__dict__, "pattern": "vertical stripes",
                                      "colour": "red", "second_colour": "green"})
  solid = toy_fashiongen.Product(**{**striped.__dict__, "pattern": "solid"})
  image_striped = toy_fashiongen.draw_product_image(striped, 0, np.random.default_rng(0))
  image_solid = toy_fashiongen.draw_product_image(solid, 0, np.random.default_rng(0))
  def green_pixels(image):
    image = image.astype(int)
    return int(((image[..., 1] > 100) & (image[..., 0] < 80)).sum())
  assert green_pixels(image_striped) > 1000
  assert green_pixels(image_solid) < green_pixels(image_striped) / 10


def _write_hdf5(path, num_rows=3, drop=None, image_shape=(256, 256, 3), descriptions=None):
  with h5py.File(path, "w") as handle:
    if drop != "input_image":
      handle.create_dataset("input_image", data=np.zeros((num_rows,) + image_shape, np.uint8))
    columns = {"input_description": descriptions or [b"red shirt"] * num_rows,
               "input_name": [b"n"] * num_rows, "input_category": [b"TOPS"] * num_rows,
               "input_subcategory": [b"SHIRTS"] * num_rows,
               "input_pose": [b"id_gridfs_1"] * num_rows}
    for name, values in columns.items():
      if name != drop:
        handle.create_dataset(name, data=np.array(values, dtype="S40")[:, None])
    if drop != "input_productID":
      handle.create_dataset("input_productID", data=np.arange(num_rows)[:, None])
  return str(path)


def test_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.h5"):
    list(fashiongen_hdf5.iterate_rows(str(tmp_path / "nowhere.h5")))


def test_missing_dataset_is_named(tmp_path):
  path = _write_hdf5(tmp_path / "no_subcategory.h5", drop="input_subcategory")
  with pytest.raises(fashiongen_hdf5.FashionGenFormatError,
                     match=r"no_subcategory\.h5.*input_subcategory"):
    list(fashiongen_hdf5.iterate_rows(path))


def test_wrong_image_shape_is_named(tmp_path):
  path = _write_hdf5(tmp_path / "small_images.h5", image_shape=(128, 128, 3))
  with pytest.raises(fashiongen_hdf5.FashionGenFormatError,
                     match=r"small_images\.h5.*input_image.*128"):
    list(fashiongen_hdf5.iterate_rows(path))


def test_not_hdf5_is_named(tmp_path):
  path = tmp_path / "garbage.h5"
  path.write_bytes(b"this is not hdf5")
  with pytest.raises(fashiongen_hdf5.FashionGenFormatError, match="garbage.h5"):
    fashiongen_hdf5.count_rows(str(path))


def test_empty_description_is_skipped_and_counted_or_named(tmp_path):
  path = _write_hdf5(tmp_path / "empty.h5", num_rows=4,
                     descriptions=[b"red shirt", b"  <br> ", b"", b"&nbsp;blue"])
  report = fashiongen_hdf5.ReadReport(path)
  rows = list(fashiongen_hdf5.iterate_rows(path, chunk_size=3, report=report))
  assert [row["record_id"] for row in rows] == [0, 3]
  assert rows[1]["description"] == "blue"
  assert report.skipped_empty_description == 2 and report.first_skipped_rows == [1, 2]
  assert "2 skipped" in report.summary()
  with pytest.raises(fashiongen_hdf5.FashionGenFormatError, match=r"empty\.h5: row 1"):
    list(fashiongen_hdf5.iterate_rows(path, on_bad_description="error"))


def test_rows_are_streamed_in_chunks_with_correct_ids(tmp_path):
  path = _write_hdf5(tmp_path / "rows.h5", num_rows=7)
  rows = list(fashiongen_hdf5.iterate_rows(path, chunk_size=3, start=2, stop=6))
  assert [row["record_id"] for row in rows] == [2, 3, 4, 5]
  assert [row["product_id"] for row in rows] == [2, 3, 4, 5]
  assert rows[0]["image"].shape == (256, 256, 3) and rows[0]["category"] == "TOPS"


def test_cli_names_a_missing_hdf5_file_in_one_line(tmp_path):
  """A config pointing at absent data: exit status 1, one line naming the file, no traceback."""
  missing = tmp_path / "fashiongen_256_256_train.h5"
  overrides = (f"data.train_hdf5={missing},data.validation_hdf5={tmp_path / 'v.h5'},"
               f"data.tfrecord_dir={tmp_path / 'records'}")
  result = subprocess.run(
      [sys.executable, "-m", "fashionbert_tf.cli.main", "prepare-data", "--config",
       "configs/paper.yaml", "--params_override", overrides],
      capture_output=True, text=True, timeout=300, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  lines = [line for line in result.stderr.splitlines() if line.startswith("fashionbert ")]
  assert result.returncode == 1, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  assert len(lines) == 1 and "FileNotFoundError" in lines[0] and str(missing) in lines[0], lines
