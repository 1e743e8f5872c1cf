"""The evaluation's pair plans: TIA negatives and the retrieval grids (paper 3.1)."""

import collections

import numpy as np
import pytest

from fashionbert_tf.evaluation import rank_at_k as retrieval


def make_table():
  # 7 products, 2 poses each; group A has products 1..4, group B 5..6, group C only product 7.
  groups = {1: "A", 2: "A", 3: "A", 4: "A", 5: "B", 6: "B", 7: "C"}
  rows = [(10 * p + pose, p) for p in groups for pose in range(2)]
  return retrieval.RecordTable(
      record_id=np.array([r for r, _ in rows], np.int64),
      product_id=np.array([p for _, p in rows], np.int64),
      description=[f"text of product {p}" for _, p in rows],
      group=[("tops", groups[p]) for _, p in rows])


def test_tia_negatives_are_other_products_of_the_same_subcategory_when_possible():
  table = make_table()
  plans = retrieval.plan_tia(table, seed=0)
  product_of = dict(zip(table.record_id.tolist(), table.product_id.tolist()))
  group_of = dict(zip(table.record_id.tolist(), table.group))
  for direction, plan in plans.items():
    assert len(plan.labels) == 2 * len(table) and plan.labels.sum() == len(table)
    positives = plan.labels == 1
    np.testing.assert_array_equal(plan.text_ids[positives], plan.image_ids[positives])
    fixed, replaced = ((plan.image_ids, plan.text_ids) if direction == "image_to_text"
                       else (plan.text_ids, plan.image_ids))
    for anchor, other in zip(fixed[~positives], replaced[~positives]):
      assert product_of[anchor] != product_of[other]
      if product_of[anchor] != 7:  # product 7 is alone in group C: any other product
        assert group_of[anchor] == group_of[other]
    assert plan.negative_pools == {"subcategory": 12, "any": 2}


def test_tia_plan_is_seeded_and_capped():
  table = make_table()
  first, again = retrieval.plan_tia(table, seed=5), retrieval.plan_tia(table, seed=5)
  np.testing.assert_array_equal(first["text_to_image"].image_ids,
                                again["text_to_image"].image_ids)
  capped = retrieval.plan_tia(table, seed=5, max_pairs_per_direction=6)
  assert len(capped["image_to_text"].labels) == 6
  # The capped records are the first ones by record_id.
  np.testing.assert_array_equal(capped["image_to_text"].image_ids[:3], [10, 11, 20])


def test_retrieval_grids_put_the_query_on_the_fixed_side():
  table = make_table()
  sets = {"image_to_text": [{"query": 10, "candidates": [20, 10, 31], "ground_truth_index": 1}],
          "text_to_image": [{"query": 21, "candidates": [21, 40, 50], "ground_truth_index": 0}]}
  plans = retrieval.plan_retrieval(sets, table)
  np.testing.assert_array_equal(plans["image_to_text"].image_ids, [[10, 10, 10]])
  np.testing.assert_array_equal(plans["image_to_text"].text_ids, [[20, 10, 31]])
  np.testing.assert_array_equal(plans["text_to_image"].text_ids, [[21, 21, 21]])
  np.testing.assert_array_equal(plans["text_to_image"].image_ids, [[21, 40, 50]])
  sets["image_to_text"].append({"query": 40, "candidates": [40, 50, 60], "ground_truth_index": 0})
  assert retrieval.plan_retrieval(sets, table)["image_to_text"].text_ids.shape == (2, 3)
  assert retrieval.plan_retrieval(sets, table, max_queries=1)["image_to_text"].text_ids.shape == (
      1, 3)
  sets["text_to_image"][0]["candidates"][1] = 12345
  with pytest.raises(ValueError, match="text_to_image query 0 names record 12345"):
    retrieval.plan_retrieval(sets, table)


def make_pose_table():
  """Groups A and B of 30 products each, 5 of every pose count 1..6 (one record per pose)."""
  rows = []
  for index in range(60):
    product, poses, group = 100 + index, 1 + index % 6, "A" if index < 30 else "B"
    rows += [(1000 * product + pose, product, group) for pose in range(poses)]
  order = np.random.default_rng(0).permutation(len(rows))       # table rows in no special order
  rows = [rows[i] for i in order]
  return retrieval.RecordTable(
      record_id=np.array([r for r, _, _ in rows], np.int64),
      product_id=np.array([p for _, p, _ in rows], np.int64),
      description=[f"text of product {p}" for _, p, _ in rows],
      group=[("tops", g) for _, _, g in rows])


@pytest.mark.parametrize("negative_sampling", ["same_subcategory", "random"])
def test_tia_labels_do_not_reveal_the_pose_count_in_either_direction(negative_sampling):
  """Negatives are a uniform record of another product: every text / image ~ half positive."""
  table = make_pose_table()
  product_of = dict(zip(table.record_id.tolist(), table.product_id.tolist()))
  group_of = dict(zip(table.record_id.tolist(), table.group))
  poses = collections.Counter(table.product_id.tolist())
  seeds = 40
  for direction in retrieval.DIRECTIONS:
    replaced_side, labels, crossed = [], [], []
    for seed in range(seeds):
      plan = retrieval.plan_tia(table, seed, negative_sampling=negative_sampling)[direction]
      fixed, replaced = ((plan.image_ids, plan.text_ids) if direction == "image_to_text"
                         else (plan.text_ids, plan.image_ids))
      negatives = plan.labels == 0
      assert all(product_of[a] != product_of[b]
                 for a, b in zip(fixed[negatives], replaced[negatives]))
      crossed += [group_of[a] != group_of[b] for a, b in zip(fixed[negatives], replaced[negatives])]
      expected_pools = ({"subcategory": len(table), "any": 0} if negative_sampling ==
                        "same_subcategory" else {"subcategory": 0, "any": len(table)})
      assert plan.negative_pools == expected_pools
      replaced_side.append(replaced)
      labels.append(plan.labels)
    replaced_side, labels = np.concatenate(replaced_side), np.concatenate(labels)
    pose_count = np.array([poses[product_of[r]] for r in replaced_side])
    for n in range(1, 7):
      # >= 2 * 5 * 2 * 40 = 800 pairs per pose count (standard error <= 0.018); products drawn
      # uniformly would give ~0.22 (1 pose) to ~0.63 (6 poses).
      rate = labels[pose_count == n].mean()
      assert abs(rate - 0.5) < 0.07, (direction, n, rate)
    if negative_sampling == "same_subcategory":
      assert not any(crossed)
    else:                          # ~105 of the ~207 other records are in the other group
      assert 0.42 < np.mean(crossed) < 0.6


def test_tia_negatives_are_a_uniform_record_of_the_group():
  """Each other product's share of a record's negatives is its share of the group's records."""
  table = make_pose_table()
  rng = np.random.default_rng(7)
  product_ids = table.product_id
  poses = collections.Counter(product_ids.tolist())
  group_of = dict(zip(product_ids.tolist(), table.group))
  anchor = int(np.flatnonzero(product_ids == 100)[0])         # product 100: 1 pose, group A
  draws = 20000
  chosen, _ = retrieval.draw_negatives(table, np.full(draws, anchor), rng)
  shares = collections.Counter(product_ids[chosen].tolist())
  pool = [p for p in poses if p != 100 and group_of[p] == group_of[100]]
  assert set(shares) == set(pool)
  pool_records = sum(poses[p] for p in pool)
  for p in pool:
    # Share <= 6/104 with 20000 draws: standard error <= 0.0017; uniform products: 1/29.
    assert abs(shares[p] / draws - poses[p] / pool_records) < 0.008, p
  with pytest.raises(ValueError, match="data.negative_sampling"):
    retrieval.plan_tia(table, 0, negative_sampling="hard")


def test_mixed_tia_negatives_are_partly_from_the_subcategory():
  table = make_table()
  pools = [retrieval.plan_tia(table, seed=seed, negative_sampling="mixed",
                              same_group_fraction=0.5)["image_to_text"].negative_pools
           for seed in range(40)]
  from_group = sum(p["subcategory"] for p in pools) / sum(sum(p.values()) for p in pools)
  # 12 of 14 records have another product in their group; each is drawn from it with prob. 0.5.
  assert abs(from_group - 0.5 * 12 / 14) < 0.06, from_group
