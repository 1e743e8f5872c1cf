"""The evaluation protocol as lists of (text, image) pairs to score (paper 3.1).

Every pair is (text record, image record): the description of one validation record with the image
of another (or the same) record. Three tasks, one list of pairs:

TIA accuracy (paper 3.1, "Text and Image Matching"), per direction:
  image-to-text: each validation record's image with its own description (positive) and with the
    description of another product (negative: same (category, subcategory) when there is one,
    else any other product; as the training pipeline pairs, without masking);
  text-to-image: each record's description with its own image (the same positives) and with the
    image of another product (negative drawn the same way).
  The paper reports one accuracy per direction (Table 1) without defining the negatives; these
  are this project's reading: a direction's negatives replace that direction's candidate side.
  `tia_accuracy` in the results is over all these pairs (positives counted once).
Rank@K (paper 3.1, "Cross-modal Retrieval"), from the saved candidate sets (BRIEF contract 4):
  image_to_text: query image q against the descriptions of its candidates -> pairs (c_j, q);
  text_to_image: query description q against the images of its candidates -> pairs (q, c_j).

Negatives are drawn once, with a seeded NumPy generator, so every evaluation scores the same pairs.
"""

import dataclasses
from typing import Dict, List

import numpy as np

from fashionbert_tf.data import candidates as candidates_lib

DIRECTIONS = candidates_lib.DIRECTIONS
NEGATIVE_POOL_NAMES = ("subcategory", "any")


@dataclasses.dataclass
class RecordTable:
  """Text metadata of the validation records, one row per record (arrays of equal length N)."""
  record_id: np.ndarray      # int64 [N]
  product_id: np.ndarray     # int64 [N]
  description: List[str]     # [N]
  group: List[tuple]         # [N] (category, subcategory)

  def __post_init__(self):
    self.row_of = {int(rid): row for row, rid in enumerate(self.record_id)}
    if len(self.row_of) != len(self.record_id):
      duplicates = len(self.record_id) - len(self.row_of)
      raise ValueError(f"validation records: {duplicates} duplicate record_id values")

  def __len__(self):
    return len(self.record_id)

  def description_of(self, record_id):
    try:
      return self.description[self.row_of[int(record_id)]]
    except KeyError:
      raise KeyError(f"record_id {record_id} is not in the validation records") from None


@dataclasses.dataclass
class TiaPlan:
  """TIA pairs of one direction: text and image record ids and labels, each [P]."""
  text_ids: np.ndarray
  image_ids: np.ndarray
  labels: np.ndarray
  negative_pools: Dict[str, int]


@dataclasses.dataclass
class RetrievalPlan:
  """One direction's candidate sets as a [Q, C] grid of pairs."""
  text_ids: np.ndarray            # int64 [Q, C]
  image_ids: np.ndarray           # int64 [Q, C]
  ground_truth_index: np.ndarray  # int64 [Q]


def _other_of(sorted_products, own, rng):
  """A uniformly drawn element of `sorted_products` (int64, sorted, contains own) other than own."""
  index = int(rng.integers(len(sorted_products) - 1))
  if index >= int(np.searchsorted(sorted_products, own)):
    index += 1  # skip the own product's slot
  return int(sorted_products[index])


def draw_negatives(table, rows, rng):
  """For each record row, one record (row index) of another product, same group when possible.

  The other product is uniform over the group's other products (else over all other products),
  then one of its records (poses) uniformly.

  Returns:
    (int64 [len(rows)] rows of the chosen records, dict pool name -> count).
  """
  product_rows = {}
  for row, product_id in enumerate(table.product_id):
    product_rows.setdefault(int(product_id), []).append(row)
  products = np.array(sorted(product_rows), np.int64)
  if len(products) < 2:
    raise ValueError(f"TIA negatives need at least 2 products in the validation records, got "
                     f"{len(products)}")
  group_products = {}
  for product_id in products:
    group_products.setdefault(table.group[product_rows[int(product_id)][0]], []).append(
        int(product_id))
  group_products = {group: np.array(members, np.int64)  # sorted: built from sorted `products`
                    for group, members in group_products.items()}
  chosen, pools = [], {name: 0 for name in NEGATIVE_POOL_NAMES}
  for row in rows:
    own = int(table.product_id[row])
    same_group = group_products[table.group[row]]
    if len(same_group) >= 2:
      other, pool = _other_of(same_group, own, rng), "subcategory"
    else:
      other, pool = _other_of(products, own, rng), "any"
    pools[pool] += 1
    other_rows = product_rows[other]
    chosen.append(other_rows[int(rng.integers(len(other_rows)))])
  return np.array(chosen, np.int64), pools


def plan_tia(table, seed, max_pairs_per_direction=0):
  """Both directions' TIA pairs (module docstring).

  Args:
    table: `RecordTable`.
    seed: int; the same seed and records give the same pairs.
    max_pairs_per_direction: 0 = every record; n = the first n // 2 records (by record_id), so a
      direction has at most n pairs (one positive + one negative per record).

  Returns:
    dict direction -> `TiaPlan`.
  """
  rows = np.argsort(table.record_id, kind="stable")
  if max_pairs_per_direction:
    rows = rows[:max(1, max_pairs_per_direction // 2)]
  rng = np.random.default_rng(seed)
  record_ids = table.record_id[rows]
  plans = {}
  for direction in DIRECTIONS:
    negative_rows, pools = draw_negatives(table, rows, rng)
    negative_ids = table.record_id[negative_rows]
    if direction == "image_to_text":   # image fixed, text replaced
      text_ids = np.concatenate([record_ids, negative_ids])
      image_ids = np.concatenate([record_ids, record_ids])
    else:                              # text fixed, image replaced
      text_ids = np.concatenate([record_ids, record_ids])
      image_ids = np.concatenate([record_ids, negative_ids])
    labels = np.concatenate([np.ones(len(rows), np.int64), np.zeros(len(rows), np.int64)])
    plans[direction] = TiaPlan(text_ids.astype(np.int64), image_ids.astype(np.int64), labels,
                               pools)
  return plans


def plan_retrieval(candidate_sets, table, max_queries=0):
  """Both directions' [Q, C] pair grids from the saved candidate sets (BRIEF contract 4).

  Args:
    candidate_sets: the dict of `candidates.load_candidates`.
    table: `RecordTable` of the validation records.
    max_queries: 0 = all; n = the first n queries of each direction.

  Raises:
    ValueError: a query or candidate record is not in the validation records, or the candidate
      lists have different lengths (names the direction and query).
  """
  plans = {}
  for direction in DIRECTIONS:
    entries = candidate_sets[direction]
    if max_queries:
      entries = entries[:max_queries]
    if not entries:
      raise ValueError(f"candidate sets: no {direction} queries")
    num_candidates = len(entries[0]["candidates"])
    queries = np.zeros([len(entries)], np.int64)
    grid = np.zeros([len(entries), num_candidates], np.int64)
    truth = np.zeros([len(entries)], np.int64)
    for q, entry in enumerate(entries):
      if len(entry["candidates"]) != num_candidates:
        raise ValueError(f"candidate sets: {direction} query {q} (record {entry['query']}) has "
                         f"{len(entry['candidates'])} candidates, the first has {num_candidates}")
      for record_id in [entry["query"]] + list(entry["candidates"]):
        if int(record_id) not in table.row_of:
          raise ValueError(f"candidate sets: {direction} query {q} names record {record_id}, "
                           "which is not in the validation TFRecords (stale candidate file? "
                           "re-run prepare-data)")
      queries[q] = entry["query"]
      grid[q] = entry["candidates"]
      truth[q] = entry["ground_truth_index"]
    query_grid = np.repeat(queries[:, None], num_candidates, axis=1)
    if direction == "image_to_text":
      plans[direction] = RetrievalPlan(text_ids=grid, image_ids=query_grid,
                                       ground_truth_index=truth)
    else:
      plans[direction] = RetrievalPlan(text_ids=query_grid, image_ids=grid,
                                       ground_truth_index=truth)
  return plans
