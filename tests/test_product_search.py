"""Two-stage retrieval (paper 3.4, Figure 5): the ScaNN recall index against brute force, the
ranking metrics on hand-computed cases, TF-IDF and encoder vectors, re-ranking order."""

import math

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import tokenization
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.product_search import ann_index
from fashionbert_tf.product_search import ranking_metrics
from fashionbert_tf.product_search import two_stage
from fashionbert_tf.product_search import vectorizers


def clustered_unit_vectors(count, dim, rng, num_clusters=12, noise=0.35):
  """Unit vectors around a few centres: how embeddings of a catalogue look (not uniform)."""
  centres = rng.normal(size=(num_clusters, dim))
  vectors = centres[rng.integers(0, num_clusters, count)] + noise * rng.normal(size=(count, dim))
  return vectorizers.l2_normalize(vectors)


# ---- the ANN index -------------------------------------------------------------------------------

def test_exact_mode_returns_the_brute_force_neighbours():
  rng = np.random.default_rng(0)
  database = clustered_unit_vectors(400, 24, rng)
  queries = clustered_unit_vectors(40, 24, rng)
  expected_rows, expected_scores = ann_index.exact_neighbours(database, queries, 10)
  index = ann_index.NearestNeighbourIndex(database, ann_index.IndexConfig(mode="exact"), max_k=10)
  rows, scores = index.search(queries, 10)
  np.testing.assert_array_equal(rows, expected_rows)
  np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
  # Scores are dot products, best first.
  np.testing.assert_allclose(scores[:, 0], np.sum(queries * database[rows[:, 0]], axis=1),
                             atol=1e-5)
  assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_approximate_mode_finds_most_exact_neighbours_and_partitions():
  rng = np.random.default_rng(1)
  database = clustered_unit_vectors(1500, 32, rng)
  queries = clustered_unit_vectors(60, 32, rng)
  expected_rows, _ = ann_index.exact_neighbours(database, queries, 10)
  index = ann_index.NearestNeighbourIndex(database, ann_index.IndexConfig(), max_k=10)
  assert index.num_leaves == round(math.sqrt(1500)) and index.num_leaves_to_search < index.num_leaves
  rows, scores = index.search(queries, 10)
  overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(),
                                                                 expected_rows.tolist())])
  assert overlap >= 0.85, overlap
  # The reorder step re-scores exactly: returned scores are true dot products.
  true_scores = np.einsum("qd,qkd->qk", queries, database[rows])
  np.testing.assert_allclose(scores, true_scores, atol=1e-4)
  # Searching every leaf (still through asymmetric hashing + exact re-scoring) finds them all.
  full = ann_index.NearestNeighbourIndex(
      database, ann_index.IndexConfig(num_leaves=8, num_leaves_to_search=8), max_k=10)
  full_rows, _ = full.search(queries, 10)
  full_overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(full_rows.tolist(),
                                                                      expected_rows.tolist())])
  assert full_overlap >= 0.98, full_overlap


def test_index_refuses_bad_input():
  vectors = np.ones([20, 4], np.float32)
  with pytest.raises(ValueError, match="mode"):
    ann_index.NearestNeighbourIndex(vectors, ann_index.IndexConfig(mode="fast"))
  vectors[3, 1] = np.nan
  with pytest.raises(ValueError, match="row 3"):
    ann_index.NearestNeighbourIndex(vectors, ann_index.IndexConfig(mode="exact"))
  with pytest.raises(ValueError, match="at least 16"):
    ann_index.NearestNeighbourIndex(np.eye(5, dtype=np.float32), ann_index.IndexConfig())
  index = ann_index.NearestNeighbourIndex(np.eye(5, dtype=np.float32),
                                          ann_index.IndexConfig(mode="exact"), max_k=3)
  with pytest.raises(ValueError, match=r"k must be in \[1, 3\]"):
    index.search(np.eye(5, dtype=np.float32), 4)
  with pytest.raises(ValueError, match=r"\[Q, 5\]"):
    index.search(np.eye(4, dtype=np.float32), 2)


# ---- metrics -------------------------------------------------------------------------------------

def test_recall_at_k_by_hand():
  assert ranking_metrics.recall_at_k([5, 1, 7, 2], {1, 2, 9}, 2) == pytest.approx(1 / 3)
  assert ranking_metrics.recall_at_k([5, 1, 7, 2], {1, 2, 9}, 4) == pytest.approx(2 / 3)
  assert ranking_metrics.recall_at_k([5, 1], {5: 2.0, 8: 0.0}, 1) == 1.0  # gain 0: not relevant
  with pytest.raises(ValueError, match="without relevant"):
    ranking_metrics.recall_at_k([1, 2], set(), 2)
  with pytest.raises(ValueError, match="duplicates"):
    ranking_metrics.recall_at_k([1, 1], {1}, 2)


def test_ndcg_at_k_by_hand():
  # Binary: relevant at ranks 2 and 3 of 3 relevant -> DCG = 1/log2(3) + 1/log2(4);
  # ideal = 1 + 1/log2(3) + 1/log2(4).
  dcg = 1 / math.log2(3) + 0.5
  ideal = 1 + 1 / math.log2(3) + 0.5
  assert ranking_metrics.ndcg_at_k([9, 1, 2], {1, 2, 3}, 10) == pytest.approx(dcg / ideal)
  # Graded (click counts): ranked 2 (gain 1) then 1 (gain 3); ideal 3 then 1.
  assert ranking_metrics.ndcg_at_k([2, 1], {1: 3, 2: 1}, 10) == pytest.approx(
      (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))
  assert ranking_metrics.ndcg_at_k([1, 2, 3], {1, 2, 3}, 2) == pytest.approx(1.0)
  assert ranking_metrics.ndcg_at_k([7, 8], {1}, 2) == 0.0
  # k cuts the list: the relevant product at rank 3 does not count at k = 2.
  assert ranking_metrics.ndcg_at_k([7, 8, 1], {1}, 2) == 0.0
  assert ranking_metrics.mean_over_queries(ranking_metrics.ndcg_at_k, [[1], [2]], [{1}, {1}],
                                           1) == 0.5


# ---- vectorizers and the two stages --------------------------------------------------------------

TITLES = ["red shirt with collar", "navy wool dress", "black cotton shirt", "white dress",
          "green t shirt with stripes"]


@pytest.fixture(scope="module")
def tokenizer(tiny_vocab_file):
  config = experiment_config.load_config(None, [f"data.vocab_file={tiny_vocab_file}"])
  return tokenization.build_tokenizer(config.data)


def test_tfidf_vectors_match_words_and_weigh_rare_ones(tokenizer):
  vectorizer = vectorizers.WordPieceTfidfVectorizer(tokenizer, TITLES)
  products = vectorizer.product_vectors(TITLES)
  np.testing.assert_allclose(np.linalg.norm(products, axis=1), 1.0, atol=1e-6)
  queries = vectorizer.query_vectors(["red shirt", "dress", "zzz"])
  scores = queries @ products.T
  assert int(np.argmax(scores[0])) == 0            # both words of title 0
  assert set(np.flatnonzero(scores[1] > 0)) == {1, 3}
  assert vectorizers.zero_vectors(queries) == 1    # "zzz" shares no piece with any title
  # "red" (1 title) weighs more than "shirt" (3 titles): idf = ln(6/2)+1 vs ln(6/4)+1.
  red, shirt = (vectorizer.columns[tokenizer.tokenize(tf.constant([w])).flat_values.numpy()[0]]
                for w in ("red", "shirt"))
  assert vectorizer.idf[red] == pytest.approx(math.log(6 / 2) + 1)
  assert vectorizer.idf[shirt] == pytest.approx(math.log(6 / 4) + 1)


def test_encoder_vectors_pool_text_positions_of_one_shared_encoder(tokenizer, tiny_vocab_file):
  config = experiment_config.load_config(None, [
      "model.encoder_format=none,model.num_layers=2,model.hidden_size=32,"
      "model.num_attention_heads=2,model.intermediate_size=64,model.backbone=linear,"
      f"model.feature_dim=8,model.vocab_size={tokenizer.vocab_size},"
      "model.patch_feature_normalization=none,model.initializer_range=0.2"])
  model = model_builder.build_fashionbert(config.model)
  features = np.random.default_rng(0).normal(size=(len(TITLES), 64, 8)).astype(np.float32)

  def sequence_output(*args):
    return vectorizers.fashionbert_sequence_output(model, *args)
  vectorizer = vectorizers.EncoderVectorizer(sequence_output, tokenizer, batch_size=2)
  with_image = vectorizer.product_vectors(TITLES, features)
  assert with_image.shape == (len(TITLES), 32)
  np.testing.assert_allclose(np.linalg.norm(with_image, axis=1), 1.0, atol=1e-5)
  # Batching does not change a vector; the image changes the product's text-side vector.
  alone = vectorizer.product_vectors(TITLES[3:4], features[3:4])
  np.testing.assert_allclose(alone[0], with_image[3], atol=1e-5)
  other_image = vectorizer.product_vectors(TITLES[3:4], features[:1])
  assert np.abs(other_image[0] - with_image[3]).max() > 1e-3
  # The query tower is the same encoder over the text alone: a title encoded as a query equals
  # the title-only product vector, and equals the masked mean computed by hand.
  title_only = vectorizers.EncoderVectorizer(sequence_output, tokenizer, product_input="title")
  np.testing.assert_allclose(title_only.query_vectors(TITLES), title_only.product_vectors(TITLES),
                             atol=1e-5)
  ids, mask, types = tokenization.text_to_model_inputs(tokenizer, tf.constant(TITLES[:1]), 64)
  hidden = vectorizers.fashionbert_sequence_output(model, ids, mask, types).numpy()[0]
  np.testing.assert_allclose(title_only.query_vectors(TITLES[:1])[0],
                             vectorizers.l2_normalize(hidden.mean(axis=0, keepdims=True))[0],
                             atol=1e-5)


def test_two_stage_search_reranks_the_recalled_products(tokenizer):
  vectorizer = vectorizers.WordPieceTfidfVectorizer(tokenizer, TITLES)
  product_ids = np.array([10, 11, 12, 13, 14])
  calls = []

  def prefer_black(queries, titles, ids):
    calls.append(len(queries))
    return np.array([0.9 if "black" in title else 0.1 for title in titles], np.float32)

  search = two_stage.TwoStageSearch(product_ids, TITLES, vectorizer.product_vectors(TITLES),
                                    vectorizer, ann_index.IndexConfig(mode="exact"),
                                    reranker=prefer_black, recall_k=3)
  recalled, _ = search.recall(["red shirt"])
  assert recalled[0, 0] == 10 and set(recalled[0].tolist()) == {10, 12, 14}
  result = search.search(["red shirt"], top_n=3)[0]
  assert calls == [3]                                   # only the recalled products are scored
  assert result.product_ids.tolist() == [12, 10, 14]   # black first, then the recall order
  assert result.titles[0] == "black cotton shirt"
  np.testing.assert_allclose(result.click_probability, [0.9, 0.1, 0.1])
  metrics = two_stage.evaluate(search, ["red shirt", "white dress"], [{10}, {13}],
                               recall_ks=(1, 3), ndcg_k=3)
  assert metrics["recall@1"] == 1.0 and metrics["recall@3"] == 1.0
  assert metrics["ndcg@3_recall_order"] == pytest.approx(1.0)
  # Re-ranked: "red shirt" -> [12, 10, 14] puts 10 second; "white dress" keeps 13 first.
  assert metrics["ndcg@3_reranked"] == pytest.approx((1 / math.log2(3) + 1) / 2)
  assert metrics["exact_overlap@3"] == 1.0 and metrics["queries_per_second_recall"] > 0


def test_capped_recall_by_hand():
  # 3 relevant, k = 2: both top-2 relevant -> capped 1.0, plain 2/3.
  assert ranking_metrics.capped_recall_at_k([1, 2, 9], {1, 2, 3}, 2) == 1.0
  assert ranking_metrics.recall_at_k([1, 2, 9], {1, 2, 3}, 2) == pytest.approx(2 / 3)
  assert ranking_metrics.capped_recall_at_k([9, 1], {1}, 2) == 1.0
  assert ranking_metrics.capped_recall_at_k([9, 8, 1], {1}, 2) == 0.0


def test_neighbour_recall_counts_ties_as_found():
  database = np.array([[1, 0], [1, 0], [0, 1], [-1, 0]], np.float32)   # rows 0 and 1 tie
  queries = np.array([[1, 0]], np.float32)
  assert ann_index.neighbour_recall(database, queries, np.array([[1]]), 1) == 1.0
  assert ann_index.neighbour_recall(database, queries, np.array([[2]]), 1) == 0.0
  assert ann_index.neighbour_recall(database, queries, np.array([[1, -1]]), 2) == 0.5
  assert ann_index.neighbour_recall(database, queries, np.array([[3, 0]]), 2) == 0.5
