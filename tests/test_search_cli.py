"""`fashionbert search` and `fashionbert evaluate-retrieval` end to end on the tiny toy data:
toy search logs over its validation products, TF-IDF recall through an exact ScaNN index (the
re-ranking model is covered by tests/test_product_search.py and the export tests)."""

import dataclasses
import json
import os

import numpy as np
from PIL import Image
import pytest

from fashionbert_tf.data import search_logs
from fashionbert_tf.data.toy import search_log_generator as toy_search_logs
from fashionbert_tf.product_search import result_strip


@pytest.fixture(scope="module")
def search_overrides(toy_data_config, tmp_path_factory):
  root = str(tmp_path_factory.mktemp("search_cli"))
  logs_dir = os.path.join(root, "toy_search_logs")
  # conftest's toy data: 24 train / 12 validation products, seed 3; the catalogue = validation.
  products = toy_search_logs.toy_catalogue_products(24, 12, 3, "validation")
  settings = dataclasses.replace(toy_search_logs.ToySearchLogSettings(), num_sessions=40,
                                 impressions_per_query=5, test_fraction=0.3, seed=1)
  toy_search_logs.write_toy_search_logs(logs_dir, products, settings)
  data = toy_data_config
  return root, [
      f"data.tfrecord_dir={data.tfrecord_dir},data.vocab_file={data.vocab_file},"
      "data.toy_num_train_products=24,data.toy_num_validation_products=12,data.toy_seed=3,"
      f"search.logs_dir={logs_dir},search.toy_num_sessions=40,search.toy_impressions_per_query=5,"
      "search.toy_test_fraction=0.3,search.toy_seed=1,"   # the settings the logs were drawn with
      "retrieval.vectorizer=tfidf,retrieval.rerank=false,"
      "retrieval.index_mode=exact,retrieval.recall_k=6,retrieval.recall_ks=[1,6],"
      f"retrieval.top_n=3,retrieval.output_dir={root}/retrieval"]


def test_search_prints_top_products_and_writes_their_image_strip(search_overrides, run_cli,
                                                                  capsys):
  from fashionbert_tf.cli import search as search_cli  # pylint: disable=g-import-not-at-top
  root, overrides = search_overrides
  catalogue = search_logs.read_catalogue(
      os.path.join(root, "toy_search_logs", search_logs.CATALOGUE_FILE))
  title = catalogue[4].title                     # e.g. "Casa Seed Navy Striped Shirt"
  query = " ".join(title.split()[-3:]).lower()   # its colour / pattern / garment words
  png = os.path.join(root, "strip.png")
  run_cli(search_cli, ["fashionbert search", "--config=", f"--query={query}",
                       f"--strip_png={png}"] + [f"--params_override={o}" for o in overrides])
  printed = capsys.readouterr().out
  rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
  assert len(rows) == 3 and [row[0] for row in rows] == ["1", "2", "3"]
  ids = [int(row[1]) for row in rows]
  assert catalogue[4].product_id in ids           # every word of the query is in its title
  assert all(p.product_id in ids or p.title != title for p in catalogue)
  assert f"images: {png}" in printed
  with Image.open(png) as image:
    width, height = image.size
  assert width > 2 * height                       # one row: the query cell and 3 products
  assert result_strip.strip_file_name("Red / striped shirt!") == "search_red_striped_shirt.png"


def test_evaluate_retrieval_reports_recall_and_ndcg(search_overrides, run_cli, capsys):
  from fashionbert_tf.cli import evaluate_retrieval  # pylint: disable=g-import-not-at-top
  root, overrides = search_overrides
  run_cli(evaluate_retrieval, ["fashionbert evaluate-retrieval", "--config="]
          + [f"--params_override={o}" for o in overrides])
  printed = capsys.readouterr().out
  assert "relevant = attributes" in printed and "relevant = clicked" in printed
  with open(os.path.join(root, "retrieval", "retrieval.json"), encoding="utf-8") as f:
    report = json.load(f)
  assert report["catalogue_size"] == 12 and report["reranker"].startswith("none")
  for metrics in report["results"].values():
    assert metrics["num_queries"] >= 1
    assert 0.0 <= metrics["recall@1"] <= metrics["recall@6"] <= 1.0
    assert 0.0 <= metrics["ndcg@10_recall_order"] <= 1.0
    assert metrics["exact_overlap@6"] == 1.0      # exact index
  # Attribute relevance is the generator's truth: every test query's own source product has all
  # the attributes the query names, so each query has at least one relevant product.
  assert report["results"]["attributes"]["mean_relevant_per_query"] >= 1.0
  assert np.isfinite(report["results"]["clicked"]["queries_per_second_recall"])
