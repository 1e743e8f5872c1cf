"""The retrieval gallery (`evaluation/gallery.py`): ranking, query selection, the PNG, errors."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.data import records
from fashionbert_tf.evaluation import evaluate
from fashionbert_tf.evaluation import gallery

RECORD_IDS = list(range(100, 108))          # 8 validation records
GREEN = np.array([0, 170, 0], np.uint8)     # gallery.GROUND_TRUTH_COLOR


def test_top_candidates_orders_by_score_with_ground_truth_last_on_ties():
  scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.2, 0.3, 0.7],
                     [0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]])
  order = gallery.top_candidates(scores, np.array([3, 0]), k=5)
  # Query 0: the tie at 0.9 puts the ground truth (column 3) after column 1.
  np.testing.assert_array_equal(order[0], [1, 3, 6, 2, 5])
  # Query 1: all tied: the ground truth (column 0) is last, so it is not shown at all.
  np.testing.assert_array_equal(order[1], [1, 2, 3, 4, 5])


def test_top_candidates_is_the_descending_score_order():
  rng = np.random.default_rng(0)
  scores = rng.random((6, 11))
  order = gallery.top_candidates(scores, rng.integers(0, 11, 6), k=5)
  np.testing.assert_array_equal(order, np.argsort(-scores, axis=1)[:, :5])
  assert gallery.top_candidates(scores[:, :3], np.zeros(6, int), k=5).shape == (6, 3)


def grids(ground_truth_best):
  """Fake Rank@K grids over RECORD_IDS: 3 text queries and 2 image queries, 6 candidates each.

  The ground truth is column q of query q; it scores highest (ground_truth_best) or lowest.
  """
  arrays = {}
  for direction, num_queries in (("text_to_image", 3), ("image_to_text", 2)):
    candidates = np.array([[RECORD_IDS[(q + c) % 8] for c in range(6)] for q in range(num_queries)])
    truth = np.arange(num_queries)
    queries = np.array(RECORD_IDS)[truth + 0]   # query q's own record is its ground truth
    candidates[np.arange(num_queries), truth] = queries
    query_grid = np.repeat(queries[:, None], 6, axis=1)
    scores = np.tile(np.linspace(0.2, 0.7, 6), (num_queries, 1))
    scores[np.arange(num_queries), truth] = 0.9 if ground_truth_best else 0.1
    text_ids, image_ids = ((query_grid, candidates) if direction == "text_to_image"
                           else (candidates, query_grid))
    arrays.update({f"{direction}_text_ids": text_ids.astype(np.int64),
                   f"{direction}_image_ids": image_ids.astype(np.int64),
                   f"{direction}_scores": scores.astype(np.float32),
                   f"{direction}_ground_truth": truth.astype(np.int64)})
  return arrays


@pytest.fixture(scope="module")
def validation_pattern(tmp_path_factory):
  """8 records written with the project's writer: flat gray images, numbered descriptions."""
  directory = str(tmp_path_factory.mktemp("gallery_records"))
  with tf.io.TFRecordWriter(records.shard_path(directory, "validation", 0, 1)) as writer:
    for index, record_id in enumerate(RECORD_IDS):
      record = {"record_id": record_id, "product_id": 1000 + index, "name": f"item {index}",
                "description": f"product {record_id}: a long sleeve shirt in cotton with a "
                               f"collar and {index} buttons at the front, made in wool",
                "category": "TOPS", "subcategory": "SHIRTS", "pose": "id_gridfs_1"}
      image = np.full((256, 256, 3), 40 + 25 * index, np.uint8)
      writer.write(records.make_example(record, records.encode_image(image)).SerializeToString())
  return records.split_file_pattern(directory, "validation")


def write_scores(directory, ground_truth_best, step=42):
  return evaluate.write_retrieval_scores(grids(ground_truth_best), str(directory), step)


def test_scores_file_round_trip_and_query_rows(tmp_path):
  path = write_scores(tmp_path, ground_truth_best=True)
  assert os.path.basename(path) == "retrieval_scores.npz"
  loaded = gallery.load_retrieval_scores(path)
  assert loaded["step"] == 42
  rows = gallery.select_queries(loaded["text_to_image"], "text_to_image", 2, top_k=5)
  assert [row.query_id for row in rows] == RECORD_IDS[:2]     # the first queries, in order
  for row in rows:
    assert row.is_ground_truth.tolist() == [True, False, False, False, False]
    assert row.candidate_ids[0] == row.query_id and row.ground_truth_rank == 1
    assert np.all(np.diff(row.scores) <= 0)
  low = gallery.select_queries(gallery.load_retrieval_scores(write_scores(
      tmp_path / "low", ground_truth_best=False))["image_to_text"], "image_to_text", 4)
  assert len(low) == 2                                        # only 2 saved image queries
  assert all(not row.is_ground_truth.any() and row.ground_truth_rank == 6 for row in low)


def green_pixels(path):
  with open(path, "rb") as f:
    image = tf.io.decode_png(f.read(), channels=3).numpy()
  return int(np.all(image == GREEN, axis=-1).sum()), image.shape


def test_gallery_png_decodes_and_is_logged_to_tensorboard(tmp_path, validation_pattern):
  scores_file = write_scores(tmp_path, ground_truth_best=True)
  path = gallery.write_retrieval_gallery(scores_file, validation_pattern)
  assert path == os.path.join(str(tmp_path), "retrieval_gallery.png")
  _, shape = green_pixels(path)
  # 6 columns of 2.2 in, 5 query rows of 2.6 in, at 80 dpi.
  assert 1000 <= shape[1] <= 1100 and 1000 <= shape[0] <= 1300, shape
  events = glob.glob(os.path.join(str(tmp_path), "events.out.tfevents.*"))
  steps = [event.step for event_file in events
           for event in tf.compat.v1.train.summary_iterator(event_file)
           for value in event.summary.value if value.tag == "evaluation/retrieval_gallery"]
  assert steps == [42]


def test_ground_truth_frame_follows_the_scores(tmp_path, validation_pattern):
  shown = write_scores(tmp_path / "shown", ground_truth_best=True)
  hidden = write_scores(tmp_path / "hidden", ground_truth_best=False)
  shown_green, _ = green_pixels(gallery.write_retrieval_gallery(shown, validation_pattern,
                                                                log_dir=""))
  hidden_green, _ = green_pixels(gallery.write_retrieval_gallery(hidden, validation_pattern,
                                                                 log_dir=""))
  # Best-scored ground truths are drawn (framed green) in all 5 rows; worst-scored ones (rank 6
  # of 6) are outside every top 5, so nothing is framed.
  assert shown_green > 5 * 200 and hidden_green == 0
  assert not glob.glob(os.path.join(str(tmp_path / "shown"), "events.out.tfevents.*"))


def test_clear_errors(tmp_path, validation_pattern):
  with pytest.raises(FileNotFoundError, match="nothing.npz"):
    gallery.load_retrieval_scores(str(tmp_path / "nothing.npz"))
  arrays = grids(True)
  del arrays["text_to_image_scores"]
  broken = evaluate.write_retrieval_scores(arrays, str(tmp_path / "broken"), 1)
  with pytest.raises(ValueError, match="text_to_image_scores"):
    gallery.load_retrieval_scores(broken)
  with pytest.raises(KeyError, match="999"):
    gallery.read_records_by_id(validation_pattern, [100, 999])
  with pytest.raises(records.RecordFileError, match="no TFRecord files"):
    gallery.write_retrieval_gallery(write_scores(tmp_path / "ok", True),
                                    str(tmp_path / "none-*.tfrecord"))
