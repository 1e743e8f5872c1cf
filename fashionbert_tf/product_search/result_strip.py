"""A PNG strip of one search's results: the query, then its top products' images, best first.

Each cell shows the product's image (its first pose, as indexed), its rank, id, title (wrapped)
and scores: P(click) from the re-ranker when there is one, and the recall stage's similarity.
Drawn with matplotlib's object API (no pyplot state), like `evaluation/gallery.py`.
"""

import os
import textwrap

import numpy as np

CELL_INCHES = 2.2
DPI = 80
WRAP_CHARS = 26


def draw_strip(result, images_by_id, title=None):
  """A matplotlib `Figure`: one row, 1 + n cells (query text, then the n products).

  Args:
    result: a `two_stage.SearchResult`.
    images_by_id: {product id: uint8 [H, W, 3]} holding every shown product.
    title: optional figure title.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  count = len(result.product_ids)
  figure = Figure(figsize=(CELL_INCHES * (1 + max(count, 1)), CELL_INCHES + 1.0), dpi=DPI,
                  layout="constrained")
  figure.suptitle(title or f"search: {result.query!r}", fontsize=11)
  axes_row = figure.subplots(1, 1 + max(count, 1), squeeze=False)[0]
  query_axes = axes_row[0]
  query_axes.text(0.05, 0.95, "\n".join(textwrap.wrap(f"query: {result.query}", WRAP_CHARS)),
                  ha="left", va="top", fontsize=9, transform=query_axes.transAxes)
  query_axes.set_facecolor("#f2f2f2")
  for index, axes in enumerate(axes_row[1:]):
    axes.set_xticks([])
    axes.set_yticks([])
    if index >= count:
      axes.set_axis_off()
      axes.text(0.5, 0.5, "no results", ha="center", va="center")
      continue
    product_id = int(result.product_ids[index])
    axes.imshow(images_by_id[product_id], interpolation="bilinear")
    probability = result.click_probability[index]
    score = (f"P(click) {probability:.3f}" if np.isfinite(probability) else
             f"sim {result.recall_scores[index]:.3f}")
    label = f"#{index + 1} id {product_id}  {score}\n" + "\n".join(
        textwrap.wrap(result.titles[index], WRAP_CHARS)[:2])
    axes.set_title(label, fontsize=7)
  query_axes.set_xticks([])
  query_axes.set_yticks([])
  return figure


def write_strip(result, images_by_id, path, title=None):
  """Draws `draw_strip` and writes it as PNG to `path` (folders created); returns the path."""
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  draw_strip(result, images_by_id, title).savefig(path, format="png")
  return path


def strip_file_name(query):
  """A file name for a query's strip: `search_<words joined by _>.png` (letters, digits, _-)."""
  words = "".join(c if c.isalnum() or c in "-_" else "_" for c in query.lower().strip())
  words = "_".join(part for part in words.split("_") if part)[:80] or "query"
  return f"search_{words}.png"
