"""Fixed retrieval candidate sets (paper 3.1): composition, pools, seeding, errors."""

import json

import pytest

from fashionbert_tf.data import candidates


def _catalogue(groups):
  """Records: `groups` = {(category, subcategory): number of products}; 2 poses per product."""
  rows, product = [], 0
  for (category, subcategory), count in groups.items():
    for _ in range(count):
      for _ in range(2):
        rows.append({"record_id": len(rows), "product_id": product, "category": category,
                     "subcategory": subcategory})
      product += 1
  return rows


def _check(sets, rows, num_candidates):
  product_of = {row["record_id"]: row["product_id"] for row in rows}
  group_of = {row["record_id"]: (row["category"], row["subcategory"]) for row in rows}
  for direction in candidates.DIRECTIONS:
    queries = [entry["query"] for entry in sets[direction]]
    assert len({product_of[q] for q in queries}) == len(queries)   # distinct query products
    for entry in sets[direction]:
      ids = entry["candidates"]
      assert len(ids) == num_candidates + 1
      assert ids[entry["ground_truth_index"]] == entry["query"]
      others = [i for k, i in enumerate(ids) if k != entry["ground_truth_index"]]
      other_products = [product_of[i] for i in others]
      assert product_of[entry["query"]] not in other_products
      assert len(set(other_products)) == num_candidates            # one record per product
      query_group = group_of[entry["query"]]
      if entry["pool"] == "subcategory":
        assert all(group_of[i] == query_group for i in others)
      elif entry["pool"] == "category":
        assert all(group_of[i][0] == query_group[0] for i in others)


def test_pools_follow_subcategory_then_category_then_any():
  rows = _catalogue({("TOPS", "SHIRTS"): 12, ("TOPS", "T-SHIRTS"): 3, ("PANTS", "SHORTS"): 4,
                     ("BAGS", "TOTES"): 1})
  sets = candidates.build_candidates(rows, 20, 20, num_candidates=10, seed=1)
  _check(sets, rows, 10)
  pools = {}
  for entry in sets["image_to_text"] + sets["text_to_image"]:
    category = next(r["subcategory"] for r in rows if r["record_id"] == entry["query"])
    pools.setdefault(category, set()).add(entry["pool"])
  assert pools["SHIRTS"] == {"subcategory"}      # 11 other shirts >= 10
  assert pools["T-SHIRTS"] == {"category"}       # 2 other t-shirts, 14 other tops
  assert pools["SHORTS"] == {"any"}
  assert len(sets["image_to_text"]) == 20 == len(sets["text_to_image"])   # all 20 products


def test_seeded_and_saved(tmp_path):
  rows = _catalogue({("TOPS", "SHIRTS"): 30})
  first = candidates.build_candidates(rows, 5, 7, num_candidates=20, seed=3)
  assert first == candidates.build_candidates(rows, 5, 7, num_candidates=20, seed=3)
  assert first != candidates.build_candidates(rows, 5, 7, num_candidates=20, seed=4)
  assert len(first["image_to_text"]) == 5 and len(first["text_to_image"]) == 7
  path = str(tmp_path / "sets.json")
  candidates.save_candidates(first, path)
  assert candidates.load_candidates(path) == json.loads(json.dumps(first))


def test_too_few_products_is_a_clear_message():
  rows = _catalogue({("TOPS", "SHIRTS"): 50})
  with pytest.raises(candidates.NotEnoughProductsError, match="50 products.*101"):
    candidates.build_candidates(rows, 10, 10, num_candidates=100, seed=0)


def test_load_rejects_missing_and_malformed_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="prepare-data"):
    candidates.load_candidates(str(tmp_path / "absent.json"))
  rows = _catalogue({("TOPS", "SHIRTS"): 5})
  sets = candidates.build_candidates(rows, 2, 2, num_candidates=3, seed=0)
  sets["text_to_image"][1]["ground_truth_index"] = (
      sets["text_to_image"][1]["ground_truth_index"] + 1) % 4
  path = tmp_path / "bad.json"
  path.write_text(json.dumps(sets))
  with pytest.raises(ValueError, match=r"bad\.json: text_to_image\[1\]"):
    candidates.load_candidates(str(path))
