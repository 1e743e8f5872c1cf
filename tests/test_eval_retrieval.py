"""The evaluation's pair plans: TIA negatives and the retrieval grids (paper 3.1)."""

import numpy as np
import pytest

from fashionbert_tf.evaluation import retrieval


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
