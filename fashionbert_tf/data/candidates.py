"""The fixed retrieval candidate sets of the evaluation (paper 3.1).

Paper 3.1: 1,000 image queries and 1,000 text queries from the test split; each query's candidate
set is its ground truth plus 100 items of other products. JSON layout:

  {"split": "validation", "seed": int, "num_candidates": int,
   "image_to_text": [{"query": record_id, "candidates": [record_id, ...],
                      "ground_truth_index": int, "pool": "subcategory"|"category"|"any"}, ...],
   "text_to_image": [same],
   "pool_counts": {"image_to_text": {...}, "text_to_image": {...}},
   "fallback": "widen"|"fill",
   "queries_beyond_subcategory": {"image_to_text": int, "text_to_image": int}}

image_to_text: the query is the image of record `query`, the candidates are the descriptions of
the listed records; text_to_image: the query is the description, the candidates are images.
`candidates` has num_candidates + 1 entries; the ground truth is `query` itself, at
`ground_truth_index` (a random position, so a scorer that favours a fixed slot gains nothing).

Choices (the paper does not say):
  - Queries are distinct products (one random record of each): descriptions of a product's poses
    are identical, so two text queries of one product would be duplicates.
  - The other candidates are distinct products other than the query's, one random record (pose)
    each, drawn from the query's subcategory when it has at least num_candidates other products.
    When it has fewer (`fallback`, `data.candidate_fallback`):
      "widen"  all of them from its category when that has enough, else from the whole split;
      "fill"   every other product of the subcategory, the rest drawn from the category's other
               products, then from any product (a retailer's small subcategories keep as many
               same-subcategory candidates as they have).
    "pool" records the widest pool a query needed, and `queries_beyond_subcategory` counts the
    queries whose pool is not "subcategory".
  - Fewer products than num_candidates + 1 in the split: `NotEnoughProductsError` with a clear
    message (prepare-data logs it and writes no candidate file); fewer products than queries asked
    for: every product is a query once, and the shortfall is logged.
"""

import collections
import json
import os

from absl import logging
import numpy as np

DIRECTIONS = ("image_to_text", "text_to_image")


class NotEnoughProductsError(ValueError):
  """The split has too few products for a full candidate set."""


def build_candidates(records, num_image_queries, num_text_queries, num_candidates, seed,
                     split="validation", fallback="widen"):
  """Builds both directions' candidate sets.

  Args:
    records: iterable of dicts with record_id, product_id, category, subcategory (one per row).
    num_image_queries, num_text_queries: queries per direction (capped at the number of products).
    num_candidates: other-product candidates per query (paper: 100).
    seed: random seed; the same seed and records give the same sets.
    split: name stored in the JSON.
    fallback: "widen" or "fill" (module docstring).

  Returns:
    The JSON-ready dict (module docstring).

  Raises:
    NotEnoughProductsError: fewer than num_candidates + 1 products.
  """
  product_records = collections.defaultdict(list)
  product_info = {}
  for record in records:
    product_records[int(record["product_id"])].append(int(record["record_id"]))
    product_info[int(record["product_id"])] = (record["category"], record["subcategory"])
  products = sorted(product_records)
  if len(products) < num_candidates + 1:
    raise NotEnoughProductsError(
        f"the {split} split has {len(products)} products, but a retrieval candidate set needs "
        f"num_candidates + 1 = {num_candidates + 1} distinct products (data.num_candidates); "
        "use more data or lower data.num_candidates")
  by_subcategory = collections.defaultdict(list)
  by_category = collections.defaultdict(list)
  for product in products:
    category, subcategory = product_info[product]
    by_subcategory[(category, subcategory)].append(product)
    by_category[category].append(product)
  if fallback not in ("widen", "fill"):
    raise ValueError(f"candidate fallback {fallback!r}; expected 'widen' or 'fill'")
  rng = np.random.default_rng(seed)

  def fill(product):
    """(pool name, other products): the subcategory's, then the category's, then any."""
    category, subcategory = product_info[product]
    chosen = [p for p in by_subcategory[(category, subcategory)] if p != product]
    pool_name = "subcategory"
    for name, wider in (("category", by_category[category]), ("any", products)):
      if len(chosen) >= num_candidates:
        break
      taken = set(chosen)
      taken.add(product)
      rest = [p for p in wider if p not in taken]
      need = min(num_candidates - len(chosen), len(rest))
      chosen += [rest[i] for i in rng.choice(len(rest), size=need, replace=False)]
      pool_name = name
    return pool_name, chosen

  def pool_for(product):
    category, subcategory = product_info[product]
    if len(by_subcategory[(category, subcategory)]) - 1 >= num_candidates:
      return "subcategory", by_subcategory[(category, subcategory)]
    if len(by_category[category]) - 1 >= num_candidates:
      return "category", by_category[category]
    return "any", products

  result = {"split": split, "seed": int(seed), "num_candidates": int(num_candidates),
            "fallback": fallback, "pool_counts": {}, "queries_beyond_subcategory": {}}
  for direction, num_queries in (("image_to_text", num_image_queries),
                                 ("text_to_image", num_text_queries)):
    if num_queries > len(products):
      logging.warning("%s: %d queries asked for but the %s split has only %d products; using "
                      "every product once", direction, num_queries, split, len(products))
    query_products = rng.permutation(products)[:num_queries]
    entries = []
    pool_counts = collections.Counter()
    for product in query_products:
      product = int(product)
      if fallback == "fill":
        pool_name, others = fill(product)
        chosen = rng.permutation(len(others))
      else:
        pool_name, pool = pool_for(product)
        others = [p for p in pool if p != product]
        chosen = rng.choice(len(others), size=num_candidates, replace=False)
      pool_counts[pool_name] += 1
      candidates = [int(rng.choice(product_records[others[i]])) for i in chosen]
      query = int(rng.choice(product_records[product]))
      ground_truth_index = int(rng.integers(0, num_candidates + 1))
      candidates.insert(ground_truth_index, query)
      entries.append({"query": query, "candidates": candidates,
                      "ground_truth_index": ground_truth_index, "pool": pool_name})
    result[direction] = entries
    result["pool_counts"][direction] = dict(pool_counts)
    result["queries_beyond_subcategory"][direction] = len(entries) - pool_counts["subcategory"]
  return result


def save_candidates(candidates, path):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp_path = path + ".tmp"
  with open(tmp_path, "w", encoding="utf-8") as handle:
    json.dump(candidates, handle)
  os.replace(tmp_path, path)


def load_candidates(path):
  """Reads and checks a candidate-set JSON file (module docstring).

  Raises:
    FileNotFoundError: no file (run prepare-data).
    ValueError: malformed, naming the file, direction and entry.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"retrieval candidate file not found: {path} (data.candidates_file); it is written by "
        "`fashionbert prepare-data` when the validation split has enough products")
  try:
    with open(path, encoding="utf-8") as handle:
      candidates = json.load(handle)
  except json.JSONDecodeError as error:
    raise ValueError(f"{path}: not valid JSON ({error})") from error
  for key in ("split", "seed", "num_candidates") + DIRECTIONS:
    if key not in candidates:
      raise ValueError(f"{path}: missing key {key!r}")
  for direction in DIRECTIONS:
    for index, entry in enumerate(candidates[direction]):
      where = f"{path}: {direction}[{index}]"
      if not {"query", "candidates", "ground_truth_index"} <= set(entry):
        raise ValueError(f"{where} lacks query / candidates / ground_truth_index")
      if len(entry["candidates"]) != candidates["num_candidates"] + 1:
        raise ValueError(f"{where} has {len(entry['candidates'])} candidates, expected "
                         f"num_candidates + 1 = {candidates['num_candidates'] + 1}")
      if entry["candidates"][entry["ground_truth_index"]] != entry["query"]:
        raise ValueError(f"{where}: candidates[ground_truth_index] is not the query")
  return candidates
