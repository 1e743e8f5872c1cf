"""Search logs (paper 3.4): the seeded toy generator, the JSON-lines reader and the split by query."""

import json
import os

import numpy as np
import pytest

from fashionbert_tf.configs import toy_search_attributes
from fashionbert_tf.data import search_logs
from fashionbert_tf.data.toy import search_log_generator as toy_search_logs
from fashionbert_tf.data.toy import search_relevance


@pytest.fixture(scope="module")
def products():
  return toy_search_logs.toy_catalogue_products(40, 120, toy_seed=0, splits="validation")


def _settings(**overrides):
  values = dict(num_sessions=600, seed=5)
  values.update(overrides)
  return toy_search_logs.ToySearchLogSettings(**values)


def test_same_seed_same_logs_other_seed_other_logs(products, tmp_path):
  first = toy_search_logs.write_toy_search_logs(str(tmp_path / "a"), products, _settings())
  again = toy_search_logs.write_toy_search_logs(str(tmp_path / "b"), products, _settings())
  other = toy_search_logs.write_toy_search_logs(str(tmp_path / "c"), products,
                                                _settings(seed=6))
  for name in ("catalogue.jsonl", "train.jsonl", "test.jsonl"):
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
  assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()
  assert first == again and first != other


def test_clicks_likely_on_matching_products_rare_otherwise(products):
  sessions = toy_search_logs.make_sessions(products, _settings(num_sessions=1500))
  by_id = {p.product_id: p for p in products}
  shown = {True: 0, False: 0}
  clicks = {True: 0, False: 0}
  for session in sessions:
    assert len(session.impressions) == 10
    assert len({i.product_id for i in session.impressions}) == 10
    for impression in session.impressions:
      match = search_relevance.product_matches(by_id[impression.product_id],
                                              session.query_attributes)
      shown[match] += 1
      clicks[match] += impression.clicked
    # Every session shows at least one product that matches its query.
    assert any(search_relevance.product_matches(by_id[i.product_id], session.query_attributes)
               for i in session.impressions)
  assert min(shown.values()) > 2000
  # Bernoulli(0.6) on matches; 0.08 / 0.02 on the others (binomial sd ~0.01 at these counts).
  assert abs(clicks[True] / shown[True] - 0.6) < 0.04
  assert clicks[False] / shown[False] < 0.08
  assert clicks[True] / shown[True] > 5 * clicks[False] / shown[False]


def test_queries_read_like_shoppers_and_name_real_attributes(products):
  sessions = toy_search_logs.make_sessions(products, _settings(num_sessions=300))
  texts = {s.query for s in sessions}
  assert len(texts) > 100
  for session in sessions:
    attributes = session.query_attributes
    assert toy_search_logs.query_text(attributes) == session.query
    assert attributes["garment"] in session.query
    if "colour" in attributes:
      assert attributes["colour"] in session.query
  # Attribute subsets of several sizes occur, e.g. a garment alone and garment + 3 attributes.
  sizes = {len(s.query_attributes) for s in sessions}
  assert {1, 2, 3, 4} <= sizes


def test_split_by_query_keeps_each_query_on_one_side(products, tmp_path):
  info = toy_search_logs.write_toy_search_logs(str(tmp_path), products, _settings())
  train = search_logs.read_split(str(tmp_path), "train")
  test = search_logs.read_split(str(tmp_path), "test")
  assert len(train) + len(test) == 600
  train_queries = {search_logs.normalize_query(s.query) for s in train}
  test_queries = {search_logs.normalize_query(s.query) for s in test}
  assert not train_queries & test_queries
  assert abs(len(test_queries) / (len(train_queries) + len(test_queries)) - 0.2) < 0.02
  assert info["splits"]["test"]["sessions"] == len(test)
  catalogue = search_logs.read_catalogue(str(tmp_path / "catalogue.jsonl"))
  assert [p.product_id for p in catalogue] == [p.product_id for p in products]
  examples = search_logs.impression_examples(test)
  assert len(examples) == 10 * len(test)
  assert set(examples.product_id.tolist()) <= {p.product_id for p in catalogue}
  assert examples.clicked.sum() == info["splits"]["test"]["clicks"]


@pytest.mark.parametrize("line, message", [
    ('{"query_id": "q1", "query": "red shirt"}', "'impressions'"),
    ('{"query_id": "q1", "query": "", "impressions": []}', "'query'"),
    ('{"query_id": "q1", "query": "red shirt", "impressions": [{"product_id": "7", '
     '"title": "x", "clicked": 1}]}', "impressions[0]: field 'product_id'"),
    ('{"query_id": "q1", "query": "red shirt", "impressions": [{"product_id": 7, '
     '"title": "x", "clicked": 2}]}', "impressions[0].clicked"),
    ('not json', "not valid JSON"),
])
def test_reader_names_file_line_and_field(tmp_path, line, message):
  path = tmp_path / "train.jsonl"
  good = {"query_id": "q0", "query": "midi skirt",
          "impressions": [{"product_id": 1, "title": "t", "clicked": True}]}
  path.write_text(json.dumps(good) + "\n" + line + "\n", encoding="utf-8")
  with pytest.raises(search_logs.SearchLogFormatError) as error:
    search_logs.read_sessions(str(path))
  assert f"{path}:2:" in str(error.value) and message in str(error.value)


def test_missing_real_logs_are_an_error_missing_toy_logs_are_generated(tmp_path):
  from fashionbert_tf.configs import experiment as experiment_config  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.search import logs  # pylint: disable=g-import-not-at-top
  real = experiment_config.load_config(None, [f"search.logs_dir={tmp_path}/shop_logs"])
  with pytest.raises(FileNotFoundError, match="catalogue.jsonl"):
    logs.ensure_search_logs(real)
  toy = experiment_config.load_config(None, [
      f"search.logs_dir={tmp_path}/toy_logs,search.toy_num_sessions=40,"
      "data.toy_num_train_products=10,data.toy_num_validation_products=30"])
  assert logs.ensure_search_logs(toy) == f"{tmp_path}/toy_logs"
  assert len(search_logs.read_split(f"{tmp_path}/toy_logs", "train")) + len(
      search_logs.read_split(f"{tmp_path}/toy_logs", "test")) == 40
  assert logs.ensure_search_logs(toy) == f"{tmp_path}/toy_logs"   # same settings: read as is
  # Toy logs drawn with other settings are not read silently.
  other = experiment_config.load_config(None, [
      f"search.logs_dir={tmp_path}/toy_logs,search.toy_num_sessions=40,"
      "search.toy_image_attribute_rate=1.0"])
  with pytest.raises(ValueError, match=r"image_attribute_rate 0\.0 \(config: 1\.0\)"):
    logs.ensure_search_logs(other)


def test_click_ceiling_scores_follow_the_generator_truth(products, tmp_path):
  """The toy logs' AUC ceilings (evaluate-search prints them under Table 4): the all-attribute
  score is the impression's true rate class, the title score judges only garment, colour and
  pattern (so it is never below the all-attribute class), and real logs (no attributes) get none."""
  toy_search_logs.write_toy_search_logs(str(tmp_path), products, _settings(num_sessions=400))
  sessions = search_logs.read_split(str(tmp_path), "train")
  catalogue = search_logs.read_catalogue(str(tmp_path / "catalogue.jsonl"))
  scores = search_relevance.click_ceiling_scores(sessions, catalogue)
  examples = search_logs.impression_examples(sessions)
  by_id = {p.product_id: p for p in products}
  truth = []
  for session in sessions:
    for impression in session.impressions:
      product = by_id[impression.product_id]
      truth.append(2 if search_relevance.product_matches(product, session.query_attributes) else
                   int(search_relevance.garment_matches(product, session.query_attributes["garment"])))
  np.testing.assert_array_equal(scores["all_attributes"], truth)
  assert (scores["title_attributes"] >= scores["all_attributes"]).all()
  # Some queries name sleeve / neckline / details: the title alone over-rates some impressions.
  assert (scores["title_attributes"] > scores["all_attributes"]).sum() > 10
  clicked = examples.clicked
  assert clicked[scores["all_attributes"] == 2].mean() > 5 * clicked[scores["all_attributes"] == 0].mean()
  stripped = [search_logs.CatalogueProduct(p.product_id, p.title) for p in catalogue]
  assert search_relevance.click_ceiling_scores(sessions, stripped) is None


def test_attribute_agreement_marks_where_one_attribute_decides(products, tmp_path):
  """evaluate-search's attribute table reads, per query attribute, the impressions whose product
  agrees with every other attribute the query names, and whether it has this one: checked against
  product_matches on each impression; a product agreeing on all of them matches the query."""
  toy_search_logs.write_toy_search_logs(str(tmp_path), products, _settings(
      num_sessions=300, image_attribute_rate=1.0, title_match_partial_rate=0.75))
  sessions = search_logs.read_split(str(tmp_path), "train")
  catalogue = search_logs.read_catalogue(str(tmp_path / "catalogue.jsonl"))
  agreement = search_relevance.attribute_agreement(sessions, catalogue)
  by_id = {p.product_id: p for p in products}
  pairs = [(session.query_attributes, by_id[impression.product_id]) for session in sessions
           for impression in session.impressions]
  assert {"garment", "colour", "sleeve"} <= set(agreement)
  for name, (deciding, agrees) in agreement.items():
    assert deciding.shape == agrees.shape == (len(pairs),)
    for index, (asked, product) in enumerate(pairs):
      others = {k: v for k, v in asked.items() if k != name}
      assert deciding[index] == (name in asked and search_relevance.product_matches(product, others))
      if deciding[index]:
        assert agrees[index] == search_relevance.product_matches(product, asked)
    # Partial impressions make both cases common where the attribute decides.
    assert 0 < agrees[deciding].sum() < deciding.sum()
  stripped = [search_logs.CatalogueProduct(p.product_id, p.title) for p in catalogue]
  assert search_relevance.attribute_agreement(sessions, stripped) is None


def test_image_deciding_logs_name_image_attributes_and_show_title_level_partials(products):
  """toy_image_attribute_rate / toy_title_match_partial_rate: queries name what only the image
  shows, and partial impressions agree with the query on everything the title shows, so the
  query + title ceiling falls well below the any-model ceiling (the original logs: within 0.02)."""
  from fashionbert_tf.evaluation import metrics
  by_id = {p.product_id: p for p in products}
  catalogue = [search_logs.CatalogueProduct(p.product_id, toy_search_logs.product_title(p),
                                            toy_search_logs.product_attributes(p))
               for p in products]
  gaps = {}
  for name, overrides in (("original", {}),
                          ("image", dict(image_attribute_rate=1.0, title_match_partial_rate=1.0,
                                         max_partial_impressions=6))):
    sessions = toy_search_logs.make_sessions(products, _settings(num_sessions=1500, **overrides))
    image_queries = [s for s in sessions
                     if any(a in s.query_attributes for a in toy_search_attributes.IMAGE_ATTRIBUTES)]
    title_level = 0
    for session in sessions:
      asked = session.query_attributes
      in_title = {k: v for k, v in asked.items() if k in toy_search_attributes.TITLE_ATTRIBUTES}
      for impression in session.impressions:
        product = by_id[impression.product_id]
        title_level += (search_relevance.product_matches(product, in_title) and
                        not search_relevance.product_matches(product, asked))
    scores = search_relevance.click_ceiling_scores(sessions, catalogue)
    clicked = search_logs.impression_examples(sessions).clicked
    gaps[name] = (metrics.roc_auc(clicked, scores["all_attributes"]) -
                  metrics.roc_auc(clicked, scores["title_attributes"]))
    if name == "image":
      # Every query whose garment has an attribute the image decides names one (a t-shirt's
      # sleeve or neckline; not a shirt's collar, which every shirt has).
      assert len(image_queries) > 0.8 * len(sessions)
      for session in sessions:
        if session not in image_queries:
          assert session.query_attributes["garment"] in ("shorts", "trousers", "mini skirt",
                                                         "midi skirt", "skirt", "shirt",
                                                         "tank top", "top", "hoodie")
      assert title_level > 2 * original_title_level
    else:
      original_title_level = title_level
      assert len(image_queries) < 0.7 * len(sessions)
  assert gaps["original"] < 0.03 and gaps["image"] > 0.04


def test_image_attributes_choose_what_the_image_deciding_queries_name(products):
  """toy_image_attributes=[sleeve]: every query whose garment has sleeves names their length (the
  toy patch features show sleeves, not necklines or details); an unknown name is a config error."""
  sessions = toy_search_logs.make_sessions(products, _settings(
      num_sessions=400, image_attribute_rate=1.0, image_attributes=("sleeve",)))
  unsleeved = {"tank top", "top", "mini skirt", "midi skirt", "skirt", "trousers", "shorts"}
  for session in sessions:
    assert "sleeve" in session.query_attributes or session.query_attributes["garment"] in unsleeved
  assert sum("sleeve" in s.query_attributes for s in sessions) > 0.5 * len(sessions)
  from fashionbert_tf.configs import experiment as experiment_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"toy_image_attributes: unknown \['collar'\]"):
    experiment_config.load_config(None, ["search.toy_image_attributes=[sleeve,collar]"])


def test_colourless_titles_leave_the_colour_to_the_image(products, tmp_path):
  """toy_title_shows_colour=false: titles and the catalogue drop the colour, colour becomes an
  image-only attribute (every query names one with image_attributes=[colour]), title-level
  partials may differ from the query in colour, and the query + title ceiling judges without it;
  colour is a config error while titles show it."""
  settings = _settings(num_sessions=800, image_attribute_rate=1.0, image_attributes=("colour",),
                       title_match_partial_rate=1.0, max_partial_impressions=6,
                       title_shows_colour=False)
  toy_search_logs.write_toy_search_logs(str(tmp_path), products, settings)
  sessions = search_logs.read_split(str(tmp_path), "train")
  catalogue = search_logs.read_catalogue(str(tmp_path / search_logs.CATALOGUE_FILE))
  by_id = {p.product_id: p for p in products}
  colours = {p.colour for p in products}
  for entry in catalogue:
    title = entry.title.lower()
    assert not any(f" {c} " in f" {title} " for c in colours), entry.title
    assert title == toy_search_logs.product_title(by_id[entry.product_id], False).lower()
  assert all("colour" in s.query_attributes for s in sessions)
  colour_only_partials = sum(
      search_relevance.product_matches(by_id[i.product_id],
                                      {k: v for k, v in s.query_attributes.items()
                                       if k != "colour"}) and
      by_id[i.product_id].colour != s.query_attributes["colour"]
      for s in sessions for i in s.impressions)
  assert colour_only_partials > len(sessions)
  from fashionbert_tf.evaluation import metrics  # pylint: disable=g-import-not-at-top
  clicked = search_logs.impression_examples(sessions).clicked
  colourless = search_relevance.click_ceiling_scores(sessions, catalogue, title_shows_colour=False)
  with_colour = search_relevance.click_ceiling_scores(sessions, catalogue)
  # Judged without the colour the query + title ceiling falls well below the full one, and below
  # the same logs judged as if titles showed it.
  np.testing.assert_array_equal(with_colour["all_attributes"], colourless["all_attributes"])
  title_auc = metrics.roc_auc(clicked, colourless["title_attributes"])
  assert metrics.roc_auc(clicked, colourless["all_attributes"]) - title_auc > 0.05
  assert metrics.roc_auc(clicked, with_colour["title_attributes"]) - title_auc > 0.05
  with pytest.raises(ValueError, match=r"unknown \['colour'\].*titles leave it out"):
    toy_search_logs.make_sessions(products, _settings(image_attributes=("colour",)))
  from fashionbert_tf.configs import experiment as experiment_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"toy_image_attributes: unknown \['colour'\]"):
    experiment_config.load_config(None, ["search.toy_image_attributes=[colour]"])
  config = experiment_config.load_config(None, [
      "search.toy_image_attributes=[colour,sleeve],search.toy_title_shows_colour=false"])
  assert config.search.toy_image_attributes == ["colour", "sleeve"]
