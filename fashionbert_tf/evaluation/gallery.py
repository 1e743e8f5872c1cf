"""A retrieval gallery PNG: what the model ranks first for a few Rank@K queries of an evaluation.

Input: `<eval output dir>/retrieval_scores.npz` (`evaluate.write_retrieval_scores`: per direction
`{d}_text_ids`, `{d}_image_ids` [Q, C] record ids, `{d}_scores` [Q, C] P(match),
`{d}_ground_truth` [Q] column of the ground truth, and `step`) and the validation TFRecords
(descriptions and encoded images, keyed by `record_id`).

Output: one PNG with two sections, rows of 1 + top_k cells:
  text queries  (text_to_image): the query description, wrapped, then its top_k images;
  image queries (image_to_text): the query image, then its top_k descriptions.
Each candidate shows its rank and P(match); the ground truth has a green frame (and, for texts, a
green background). Each query says where its ground truth ranked among the C candidates.

Queries are the first `num_text_queries` / `num_image_queries` of the saved sets, so two renders of
the same evaluation are the same. Ranking is by score, best first, with ties counted against the
ground truth as in `metrics.ground_truth_ranks` (`top_candidates`).

`write_evaluation_gallery(config)` writes `<eval output dir>/retrieval_gallery.png` and logs the
same image to TensorBoard in the eval dir (tag `evaluation/retrieval_gallery`, at the evaluated
step).
"""

import dataclasses
import io
import os
import textwrap

import numpy as np
import tensorflow as tf

from fashionbert_tf.data import pipeline
from fashionbert_tf.data import records
from fashionbert_tf.evaluation import evaluate
from fashionbert_tf.evaluation import metrics
from fashionbert_tf.utils import tensorboard_images

GALLERY_FILE = "retrieval_gallery.png"
IMAGE_TAG = "evaluation/retrieval_gallery"
TEXT_QUERIES = "text_to_image"           # a description against C images
IMAGE_QUERIES = "image_to_text"          # an image against C descriptions
GROUND_TRUTH_COLOR = "#00aa00"           # exactly (0, 170, 0): the frame of every ground truth
GROUND_TRUTH_FILL = "#ddf5dd"
CELL_INCHES = 2.2
ROW_INCHES = 2.6
DPI = 80
WRAP_CHARS = 32
MAX_LINES = 12


@dataclasses.dataclass
class QueryRow:
  """One query of the gallery and its top_k candidates (best first)."""
  direction: str                 # TEXT_QUERIES or IMAGE_QUERIES
  query_index: int               # row of the saved [Q, C] grid
  query_id: int                  # record id of the query (its description or its image)
  candidate_ids: np.ndarray      # int64 [k] record ids of the shown candidates
  scores: np.ndarray             # float [k] their P(match)
  is_ground_truth: np.ndarray    # bool [k]
  ground_truth_rank: int         # 1-based, among all C candidates (ties against it)
  num_candidates: int            # C


def top_candidates(scores, ground_truth_index, k=5):
  """Columns of each query's k best candidates, best first.

  Order: descending score; among equal scores the ground truth comes last (ties count against it,
  as in `metrics.ground_truth_ranks`), other ties by column.

  Args:
    scores: float [Q, C].
    ground_truth_index: int [Q].
    k: how many (at most C).

  Returns:
    int64 [Q, min(k, C)].
  """
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [Q, C], got shape {scores.shape}")
  num_queries, num_candidates = scores.shape
  is_truth = np.zeros(scores.shape, bool)
  is_truth[np.arange(num_queries), np.asarray(ground_truth_index)] = True
  columns = np.broadcast_to(np.arange(num_candidates), scores.shape)
  # np.lexsort sorts by the last key first: -score, then ground truth last, then column.
  order = np.lexsort((columns, is_truth, -scores), axis=-1)
  return order[:, :min(k, num_candidates)].astype(np.int64)


def load_retrieval_scores(path):
  """The arrays of `retrieval_scores.npz`: {direction: dict(text_ids, image_ids, scores,
  ground_truth)} for the directions present, plus "step" (int).

  Raises:
    FileNotFoundError: no such file (run `fashionbert evaluate` first).
    ValueError: a direction's arrays are incomplete or their shapes disagree (names the file).
  """
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} does not exist; `fashionbert evaluate` writes it (with "
                            "results.json) in the evaluation output folder")
  with tf.io.gfile.GFile(path, "rb") as f:
    content = f.read()
  with np.load(io.BytesIO(content)) as data:
    arrays = {key: data[key] for key in data.files}
  loaded = {"step": int(arrays.get("step", 0))}
  for direction in (TEXT_QUERIES, IMAGE_QUERIES):
    names = ("text_ids", "image_ids", "scores", "ground_truth")
    present = [name for name in names if f"{direction}_{name}" in arrays]
    if not present:
      continue
    if len(present) != len(names):
      missing = [f"{direction}_{name}" for name in names if name not in present]
      raise ValueError(f"{path}: missing arrays {missing}")
    entry = {name: arrays[f"{direction}_{name}"] for name in names}
    grid = entry["scores"].shape
    if (len(grid) != 2 or entry["text_ids"].shape != grid or entry["image_ids"].shape != grid
        or entry["ground_truth"].shape != grid[:1]):
      raise ValueError(
          f"{path}: {direction} arrays disagree: text_ids {entry['text_ids'].shape}, image_ids "
          f"{entry['image_ids'].shape}, scores {grid} (all [Q, C]), ground_truth "
          f"{entry['ground_truth'].shape} ([Q])")
    loaded[direction] = entry
  if not any(direction in loaded for direction in (TEXT_QUERIES, IMAGE_QUERIES)):
    raise ValueError(f"{path}: no retrieval arrays (keys {sorted(arrays)})")
  return loaded


def select_queries(entry, direction, num_queries, top_k=5):
  """The first `num_queries` queries of one direction as `QueryRow`s (see `load_retrieval_scores`).

  Raises:
    ValueError: a query's row does not hold one query record (the file is not a Rank@K grid).
  """
  query_side, candidate_side = (("text_ids", "image_ids") if direction == TEXT_QUERIES
                                else ("image_ids", "text_ids"))
  count = min(int(num_queries), entry["scores"].shape[0])
  scores = entry["scores"][:count]
  truth = entry["ground_truth"][:count].astype(np.int64)
  order = top_candidates(scores, truth, top_k)
  ranks = metrics.ground_truth_ranks(scores, truth)
  rows = []
  for q in range(count):
    query_ids = entry[query_side][q]
    if not np.all(query_ids == query_ids[0]):
      raise ValueError(f"{direction} query {q}: its {query_side} row holds several records "
                       f"({sorted(set(query_ids.tolist()))[:5]} ...); expected one query")
    columns = order[q]
    rows.append(QueryRow(
        direction=direction, query_index=q, query_id=int(query_ids[0]),
        candidate_ids=entry[candidate_side][q, columns].astype(np.int64),
        scores=scores[q, columns], is_ground_truth=columns == truth[q],
        ground_truth_rank=int(ranks[q]), num_candidates=int(scores.shape[1])))
  return rows


def read_records_by_id(file_pattern, record_ids):
  """{record_id: {"description": str, "image": uint8 [256, 256, 3]}} of the given records.

  One pass over the TFRecords matching `file_pattern`; only the wanted images are decoded.

  Raises:
    records.RecordFileError: no files match, or a file is corrupt.
    KeyError: some record ids are not in the files (the message names them and the pattern).
  """
  wanted = {int(record_id) for record_id in record_ids}
  found = {}
  for _, _, batch in records.iterate_parsed_batches(file_pattern, records.FEATURE_SPEC):
    for index, record_id in enumerate(batch["record_id"].tolist()):
      if record_id in wanted and record_id not in found:
        found[record_id] = {
            "description": batch["description"][index].decode("utf-8"),
            "image": records.decode_image(batch["image"][index]).numpy()}
  missing = sorted(wanted - set(found))
  if missing:
    raise KeyError(f"record_id {missing[:10]} not in the TFRecords {file_pattern!r} "
                   f"({len(missing)} missing); were the scores computed on other data?")
  return found


def _wrap(text, width=WRAP_CHARS, max_lines=MAX_LINES):
  lines = textwrap.wrap(text, width) or [""]
  if len(lines) > max_lines:
    lines = lines[:max_lines]
    lines[-1] = lines[-1][:width - 3] + "..."
  return "\n".join(lines)


def _frame(axes, color, width):
  axes.set_xticks([])
  axes.set_yticks([])
  for spine in axes.spines.values():
    spine.set_visible(True)
    spine.set_color(color)
    spine.set_linewidth(width)


def _draw_text(axes, text, fill=None):
  axes.text(0.04, 0.96, _wrap(text), ha="left", va="top", fontsize=8, transform=axes.transAxes,
            wrap=False)
  if fill:
    axes.set_facecolor(fill)


def _draw_candidate(axes, rank, row, index, record):
  truth = bool(row.is_ground_truth[index])
  label = f"#{rank}  P(match) {row.scores[index]:.4f}" + ("  ground truth" if truth else "")
  axes.set_title(label, fontsize=8, color="black", fontweight="bold" if truth else "normal")
  if row.direction == TEXT_QUERIES:
    axes.imshow(record["image"], interpolation="bilinear")
  else:
    _draw_text(axes, record["description"], GROUND_TRUTH_FILL if truth else None)
  _frame(axes, GROUND_TRUTH_COLOR if truth else "#bbbbbb", 5 if truth else 1)


def _draw_query(axes, row, record):
  kind = "text" if row.direction == TEXT_QUERIES else "image"
  axes.set_title(f"{kind} query {row.query_index} (record {row.query_id})\nground truth rank "
                 f"{row.ground_truth_rank} of {row.num_candidates}", fontsize=8)
  if row.direction == TEXT_QUERIES:
    _draw_text(axes, record["description"], "#f2f2f2")
  else:
    axes.imshow(record["image"], interpolation="bilinear")
  _frame(axes, "black", 1.5)


def draw_gallery(sections, records_by_id, title, top_k=5):
  """A matplotlib `Figure` (not shown): one section per non-empty list of `QueryRow`s.

  Args:
    sections: list of (heading, [QueryRow]).
    records_by_id: {record_id: {"description", "image"}} holding every query and candidate.
    title: the figure's title.
    top_k: candidates per row (columns = 1 + top_k).
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  sections = [(heading, rows) for heading, rows in sections if rows]
  if not sections:
    raise ValueError("nothing to draw: no queries in any direction")
  num_rows = sum(len(rows) for _, rows in sections)
  figure = Figure(figsize=(CELL_INCHES * (1 + top_k), ROW_INCHES * num_rows + 0.6 * len(sections)
                           + 0.4), dpi=DPI, layout="constrained")
  figure.suptitle(title, fontsize=12)
  subfigures = figure.subfigures(len(sections), 1, squeeze=False,
                                 height_ratios=[len(rows) for _, rows in sections])[:, 0]
  for subfigure, (heading, rows) in zip(subfigures, sections):
    subfigure.suptitle(heading, fontsize=10, x=0.01, ha="left")
    grid = subfigure.subplots(len(rows), 1 + top_k, squeeze=False)
    for axes_row, row in zip(grid, rows):
      _draw_query(axes_row[0], row, records_by_id[row.query_id])
      for index in range(top_k):
        axes = axes_row[1 + index]
        if index < len(row.candidate_ids):
          _draw_candidate(axes, index + 1, row, index, records_by_id[int(row.candidate_ids[index])])
        else:
          axes.set_axis_off()
  return figure


def write_retrieval_gallery(scores_file, file_pattern, output_path=None, log_dir=None,
                            num_text_queries=4, num_image_queries=4, top_k=5):
  """Draws the gallery of one evaluation and writes it as PNG (and to TensorBoard).

  Args:
    scores_file: the evaluation's `retrieval_scores.npz`.
    file_pattern: the validation TFRecords the evaluation scored (glob).
    output_path: the PNG; default `retrieval_gallery.png` next to `scores_file`.
    log_dir: TensorBoard folder for the image (tag `evaluation/retrieval_gallery`, at the
      evaluated step); None = the folder of `scores_file`; "" = do not log.
    num_text_queries, num_image_queries: the first this many queries of each direction.
    top_k: candidates shown per query.

  Returns:
    The PNG's path.
  """
  loaded = load_retrieval_scores(scores_file)
  sections = []
  for direction, count, heading in (
      (TEXT_QUERIES, num_text_queries,
       f"Text -> image: a description and its top-{top_k} images by P(match)"),
      (IMAGE_QUERIES, num_image_queries,
       f"Image -> text: an image and its top-{top_k} descriptions by P(match)")):
    if direction in loaded and count > 0:
      sections.append((heading, select_queries(loaded[direction], direction, count, top_k)))
  needed = {row.query_id for _, rows in sections for row in rows}
  needed.update(int(i) for _, rows in sections for row in rows for i in row.candidate_ids)
  records_by_id = read_records_by_id(file_pattern, needed)
  figure = draw_gallery(sections, records_by_id,
                        f"Retrieval gallery, step {loaded['step']} (green frame = ground truth)",
                        top_k)
  directory = os.path.dirname(scores_file)
  output_path = output_path or os.path.join(directory, GALLERY_FILE)
  if os.path.dirname(output_path):
    tf.io.gfile.makedirs(os.path.dirname(output_path))
  figure.savefig(output_path, format="png")
  log_dir = directory if log_dir is None else log_dir
  if log_dir:
    tensorboard_images.log_png(output_path, log_dir, IMAGE_TAG, loaded["step"])
  return output_path


def write_evaluation_gallery(config, **kwargs):
  """`write_retrieval_gallery` for the evaluation of `config` (its eval output dir and the
  validation image shards: `data.tfrecord_dir`'s, or TFDS's with `data.source: tfds`); returns
  the PNG's path."""
  directory = evaluate.output_dir(config)
  return write_retrieval_gallery(
      os.path.join(directory, evaluate.RETRIEVAL_SCORES_FILE),
      pipeline.split_file_pattern(config.data, "validation"), **kwargs)
