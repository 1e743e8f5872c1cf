"""The evaluation protocol as lists of (text, image) pairs to score (paper 3.1).

Every pair is (text record, image record): the description of one validation record with the image
of another (or the same) record. Three tasks, one list of pairs:

TIA accuracy (paper 3.1, "Text and Image Matching"), per direction:
  image-to-text: each validation record's image with its own description (positive) and with the
    description of another product (negative; as the training pipeline pairs, without masking);
  text-to-image: each record's description with its own image (the same positives) and with the
    image of another product (negative drawn the same way).
  A negative is a uniformly random record among the records of the other products of the
  anchor's (category, subcategory) (else of all other products; with data.negative_sampling =
  random, always of all other products): products weigh by their number of records, so in each
  direction every text and every image is about as likely in a negative as in a positive, as in
  training (data/pairing.py says why: drawing the product uniformly leaks the pose count).
  The paper reports one accuracy per direction (Table 1) without defining the negatives; these
  are this project's reading: a direction's negatives replace that direction's candidate side.
  `tia_accuracy` in the results is over both directions' pairs, each direction's positives
  included: the two accuracies' mean weighted by their pair counts.
Rank@K (paper 3.1, "Cross-modal Retrieval"), from the saved candidate sets (`data/candidates.py`):
  image_to_text: query image q against the descriptions of its candidates -> pairs (c_j, q);
  text_to_image: query description q against the images of its candidates -> pairs (q, c_j).

Negatives are drawn once, with a seeded NumPy generator, so every evaluation scores the same pairs.
"""

import dataclasses
from typing import Dict, List

import numpy as np

from fashionbert_tf.configs import data as data_config_lib
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


def draw_negatives(table, rows, rng, negative_sampling="same_subcategory",
                   same_group_fraction=0.5):
  """For each record row, one record (row index) of another product, same group when possible.

  The record is uniform over the records of the other products of the row's group (a product's
  group is its first record's (category, subcategory)); over the records of all other products
  when the group has no other product, or always with negative_sampling="random". Products are
  thus weighted by their record count (module docstring).

  Args:
    table: `RecordTable`.
    rows: int [R] rows of `table` to draw negatives for.
    rng: `np.random.Generator`.
    negative_sampling: "same_subcategory", "random" or "mixed" (`data.negative_sampling`; "mixed":
      from the group with probability `same_group_fraction`, else from all other products).
    same_group_fraction: see "mixed".

  Returns:
    (int64 [R] rows of the chosen records, dict pool name -> count), pools "subcategory" (drawn
    from the own group) and "any" (from all other products).
  """
  data_config_lib.check_negative_sampling(negative_sampling)
  rows = np.asarray(rows, np.int64)
  products, product_of_row = np.unique(np.asarray(table.product_id, np.int64),
                                       return_inverse=True)
  product_of_row = product_of_row.reshape(-1)
  if len(products) < 2:
    raise ValueError(f"TIA negatives need at least 2 products in the validation records, got "
                     f"{len(products)}")
  num_rows = len(table)
  first_row = np.full(len(products), num_rows, np.int64)
  np.minimum.at(first_row, product_of_row, np.arange(num_rows))
  if negative_sampling == "random":
    group_of_product = np.zeros(len(products), np.int64)
  else:
    group_keys = {}
    group_of_product = np.array(
        [group_keys.setdefault(table.group[row], len(group_keys)) for row in first_row], np.int64)
  group_of_row = group_of_product[product_of_row]
  # Rows ordered by (group, product): a group's records are one contiguous range, and within it a
  # product's records are one contiguous block.
  order = np.lexsort((np.arange(num_rows), product_of_row, group_of_row))
  position = np.empty(num_rows, np.int64)
  position[order] = np.arange(num_rows)
  group_records = np.bincount(group_of_row)
  group_first = np.concatenate([[0], np.cumsum(group_records)[:-1]])
  group_products = np.bincount(group_of_product)
  product_records = np.bincount(product_of_row, minlength=len(products))
  product_first = np.full(len(products), num_rows, np.int64)
  np.minimum.at(product_first, product_of_row, position)

  own = product_of_row[rows]
  group = group_of_product[own]
  in_group = group_products[group] >= 2
  if negative_sampling == "mixed":
    in_group &= rng.random(len(rows)) < same_group_fraction
  start = np.where(in_group, group_first[group], 0)
  size = np.where(in_group, group_records[group], num_rows)
  others = size - product_records[own]                   # >= 1: the range has another product
  drawn = start + rng.integers(0, others)
  drawn = np.where(drawn >= product_first[own], drawn + product_records[own], drawn)
  chosen = order[drawn].astype(np.int64)
  from_group = int(in_group.sum()) if negative_sampling != "random" else 0
  pools = {"subcategory": from_group, "any": len(rows) - from_group}
  return chosen, pools


def plan_tia(table, seed, max_pairs_per_direction=0, negative_sampling="same_subcategory",
             same_group_fraction=0.5):
  """Both directions' TIA pairs (module docstring).

  Args:
    table: `RecordTable`.
    seed: int; the same seed and records give the same pairs.
    max_pairs_per_direction: 0 = every record; n = the first n // 2 records (by record_id), so a
      direction has at most n pairs (one positive + one negative per record).
    negative_sampling: "same_subcategory" or "random" (`data.negative_sampling`, as in training).

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
    negative_rows, pools = draw_negatives(table, rows, rng, negative_sampling,
                                          same_group_fraction)
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
  """Both directions' [Q, C] pair grids from the saved candidate sets.

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
