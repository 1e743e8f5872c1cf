"""`data.negative_sampling = "look_alike"`: negatives from the products whose images look alike."""

import os

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.configs import data as data_config_lib
from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import look_alike
from fashionbert_tf.data import negatives_index
from fashionbert_tf.data import pairing
from fashionbert_tf.data import pipeline
from fashionbert_tf.data import records
from fashionbert_tf.data import tokenization
from fashionbert_tf.evaluation import evaluate
from fashionbert_tf.training import pretrain

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")


def test_neighbours_are_the_most_cosine_similar_other_rows():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 16)) * 10
  cluster = np.repeat(np.arange(3), 5)                          # 3 clusters of 5 rows
  embeddings = centres[cluster] + rng.normal(size=(15, 16))
  embeddings[4] *= 7.0                                          # scale does not count: cosine
  neighbours = look_alike.nearest_neighbours(embeddings, 4)
  assert neighbours.shape == (15, 4)
  assert (neighbours != np.arange(15)[:, None]).all()
  assert (cluster[neighbours] == cluster[:, None]).all()
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  similarity = unit @ unit.T
  for row in range(15):   # best first
    values = similarity[row, neighbours[row]]
    assert (np.diff(values) <= 1e-12).all(), values


def test_neighbours_of_more_rows_than_one_block_match_a_full_sort():
  """Rows past the first 1,024 (the similarity block) get their own neighbours too."""
  embeddings = np.random.default_rng(4).normal(size=(2100, 8))
  neighbours = look_alike.nearest_neighbours(embeddings, 3)
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  for row in (0, 1023, 1024, 2099):
    similarity = unit @ unit[row]
    similarity[row] = -np.inf
    np.testing.assert_array_equal(neighbours[row], np.argsort(-similarity)[:3])


def test_neighbours_are_capped_at_the_other_rows_and_ties_go_to_the_lower_row():
  embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  neighbours = look_alike.nearest_neighbours(embeddings, 10)
  assert neighbours.shape == (4, 3)
  np.testing.assert_array_equal(neighbours[0], [1, 2, 3])
  np.testing.assert_array_equal(neighbours[2], [0, 1, 3])
  with pytest.raises(ValueError, match="data.look_alike_neighbours = 0"):
    look_alike.nearest_neighbours(embeddings, 0)
  with pytest.raises(ValueError, match=r"\[N >= 2, D\]"):
    look_alike.nearest_neighbours(embeddings[:1], 3)


def write_feature_records(path, products, dtype="float16", texts=None):
  """One TFRecord of feature records: products = [(product_id, [64, D] features per pose)];
  texts: product id -> description (default "text <id>")."""
  image = records.encode_image(np.zeros((8, 8, 3), np.uint8))
  with tf.io.TFRecordWriter(path) as writer:
    record_id = 0
    for product_id, poses in products:
      for features in poses:
        text = texts[product_id] if texts else f"text {product_id}"
        row = {"record_id": record_id, "product_id": product_id, "description": text,
               "name": "n", "category": "C", "subcategory": "S", "pose": "p"}
        writer.write(records.make_example(row, image, features, dtype).SerializeToString())
        record_id += 1


def test_standardized_columns_have_zero_mean_and_unit_spread():
  rng = np.random.default_rng(3)
  embeddings = rng.normal(size=(40, 5)) * [1.0, 10.0, 100.0, 0.1, 0.0] + 3.0
  standardized = look_alike.standardize_columns(embeddings)
  np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-12)
  np.testing.assert_allclose(standardized.std(axis=0), [1, 1, 1, 1, 0], atol=1e-12)
  np.testing.assert_array_equal(standardized[:, 4], 0.0)   # a constant column


def test_a_products_embedding_averages_its_patches_and_poses(tmp_path):
  rng = np.random.default_rng(1)
  poses = {7: [rng.normal(size=(64, 6)) for _ in range(3)], 9: [rng.normal(size=(64, 6))]}
  path = str(tmp_path / "train-00000-of-00001.tfrecord")
  write_feature_records(path, list(poses.items()), dtype="float32")
  means = look_alike.mean_product_features(path, [9, 7])
  np.testing.assert_allclose(means[0], poses[9][0].mean(axis=0), atol=1e-6)
  np.testing.assert_allclose(means[1], np.mean([p.mean(axis=0) for p in poses[7]], axis=0),
                             atol=1e-6)
  with pytest.raises(records.RecordFileError, match="no records for 1 product.*product 11"):
    look_alike.mean_product_features(path, [9, 7, 11])
  with pytest.raises(records.RecordFileError, match=r":3: product 9 is not among"):
    look_alike.mean_product_features(path, [7])


def test_non_finite_features_and_image_records_are_named(tmp_path, toy_data_config):
  features = np.zeros((64, 4))
  features[5, 2] = np.nan
  path = str(tmp_path / "train-00000-of-00001.tfrecord")
  write_feature_records(path, [(1, [np.ones((64, 4))]), (2, [features])], dtype="float32")
  with pytest.raises(records.RecordFileError, match=r"tfrecord:1: non-finite patch features"):
    look_alike.mean_product_features(path, [1, 2])
  images = records.split_file_pattern(toy_data_config.tfrecord_dir, "train")
  with pytest.raises(records.RecordFileError, match="no patch_features; data.negative_sampling="
                     "look_alike needs the precomputed patch-feature records"):
    pairing.NegativeSampler.from_records(images, "look_alike")


CLUSTER_WORDS = ("black", "white", "navy", "red")   # in the tests' tiny vocabulary


def clustered_products(tmp_path, clusters=4, per_cluster=6, seed=2):
  """Feature records of `clusters` look-alike groups; pose counts 1..3; descriptions name the
  cluster ("<CLUSTER_WORDS[c]> shirt"). Returns (pattern, product ids, cluster of each product,
  pose count of each product, cluster centres [clusters, 32])."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, 32)) * 5
  product_ids = 500 + 3 * np.arange(clusters * per_cluster)
  cluster = np.repeat(np.arange(clusters), per_cluster)
  pose_counts = 1 + np.arange(len(product_ids)) % 3
  products = [(int(p), [centres[c] + rng.normal(size=(64, 32)) * 0.5 for _ in range(n)])
              for p, c, n in zip(product_ids, cluster, pose_counts)]
  path = str(tmp_path / "train-00000-of-00001.tfrecord")
  texts = {int(p): f"{CLUSTER_WORDS[c]} shirt" for p, c in zip(product_ids, cluster)}
  write_feature_records(path, products, texts=texts)
  negatives_index.write_for(path)
  return path, product_ids, cluster, pose_counts, centres


@pytest.mark.parametrize("fraction", [0.3, 1.0])
def test_look_alike_negatives_come_from_the_neighbours_at_the_configured_rate(tmp_path, fraction):
  """P(same cluster) = fraction + (1 - fraction) * (the cluster's share of the other records)
  with the other products of the cluster as the K = 5 look-alikes; within them by record."""
  pattern, product_ids, cluster, pose_counts, _ = clustered_products(tmp_path)
  sampler = pairing.NegativeSampler.from_records(
      pattern, "look_alike", look_alike_neighbours=5, look_alike_fraction=fraction)
  cluster_of = dict(zip(product_ids.tolist(), cluster.tolist()))
  poses_of = dict(zip(product_ids.tolist(), pose_counts.tolist()))
  for row, neighbours in enumerate(sampler.look_alikes):   # the sampler's own order
    own = sampler.product_ids[row]
    assert {cluster_of[sampler.product_ids[n]] for n in neighbours} == {cluster_of[own]}
  draws = 3000
  own = np.repeat(product_ids[:8], draws)
  _, negative = sampler.sample(tf.constant(own), tf.constant([5, 6]))
  negative = negative.numpy()
  assert (negative != own).all()
  for product in product_ids[:8]:
    others = [p for p in product_ids if p != product]
    alike = [p for p in others if cluster_of[p] == cluster_of[product]]
    share = sum(poses_of[p] for p in alike) / sum(poses_of[p] for p in others)
    drawn = negative[own == product]
    same = np.mean([cluster_of[p] == cluster_of[product] for p in drawn])
    assert abs(same - (fraction + (1 - fraction) * share)) < 0.04, (product, same)
    if fraction == 1.0:   # by record: a 3-pose look-alike is drawn 3 times as often as a 1-pose
      counts = {p: np.sum(drawn == p) for p in alike}
      expected = {p: draws * poses_of[p] / sum(poses_of[q] for q in alike) for p in alike}
      for p in alike:
        assert abs(counts[p] - expected[p]) < 0.15 * expected[p] + 20, (counts, expected)


def test_the_pipeline_draws_random_negatives_before_the_start_step(tmp_path, toy_data_config):
  """Batches of 8 pairs, look-alikes only (fraction 1) from step 20: a negative's text names
  the image's own cluster at the random rate (5 of the 23 other products) before, always after."""
  pattern, _, _, _, centres = clustered_products(tmp_path)
  config = toy_data_config.replace(negative_sampling="look_alike", look_alike_fraction=1.0,
                                   look_alike_neighbours=5, look_alike_start_step=20)
  dataset = pipeline.build_pretraining_dataset(
      config, "train", batch_size=8, image_mode=False, shuffle=False, repeat=True,
      file_pattern=pattern, masking_enabled=False)
  vocab = tokenization.read_vocab(config.vocab_file)
  word_ids = [vocab.index(w) for w in CLUSTER_WORDS]
  same_cluster = []
  for batch in dataset.take(60):
    negative = batch["tia_label"].numpy() == 0
    means = batch["patch_features"].numpy()[negative].mean(axis=1)
    image_cluster = np.argmin(((means[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    ids = batch["input_word_ids"].numpy()[negative]
    text_cluster = np.array([[w in row for w in word_ids].index(True) for row in ids])
    same_cluster.append(np.mean(image_cluster == text_cluster))
  assert np.mean(same_cluster[:18]) < 0.45, same_cluster[:18]
  assert min(same_cluster[24:]) == 1.0, same_cluster[24:]


def test_look_alike_rows_are_checked():
  ids, texts, groups = [1, 2, 3], ["a", "b", "c"], ["g"] * 3
  with pytest.raises(ValueError, match="needs look_alikes"):
    pairing.NegativeSampler(ids, texts, groups, negative_sampling="look_alike")
  with pytest.raises(ValueError, match=r"expected \[3, K >= 1\]"):
    pairing.NegativeSampler(ids, texts, groups, negative_sampling="look_alike",
                            look_alikes=[[1], [0]])
  with pytest.raises(ValueError, match="its own look-alike"):
    pairing.NegativeSampler(ids, texts, groups, negative_sampling="look_alike",
                            look_alikes=[[1], [1], [0]])
  with pytest.raises(ValueError, match=r"rows must be in \[0, 3\)"):
    pairing.NegativeSampler(ids, texts, groups, negative_sampling="look_alike",
                            look_alikes=[[1], [3], [0]])


def test_settings_are_validated_and_held_out_pairs_draw_random_negatives(toy_data_config):
  with pytest.raises(ValueError, match="data.look_alike_fraction = 1.5"):
    data_config_lib.DataConfig(negative_sampling="look_alike", look_alike_fraction=1.5).validate()
  with pytest.raises(ValueError, match="data.look_alike_neighbours = 0"):
    data_config_lib.DataConfig(look_alike_neighbours=0).validate()
  with pytest.raises(ValueError, match="data.look_alike_start_step = -1"):
    data_config_lib.DataConfig(look_alike_start_step=-1).validate()
  config = experiment_config.load_config(os.path.join(CONFIGS, "toy_linear.yaml"),
                                         ["data.negative_sampling=look_alike"])
  assert evaluate.tia_negative_sampling(config) == "random"
  assert evaluate.tia_negative_sampling(config.replace(
      eval={"tia_negative_sampling": "same_subcategory"})) == "same_subcategory"
  with pytest.raises(ValueError, match="eval.tia_negative_sampling = 'look_alike'"):
    experiment_config.load_config(None, ["eval.tia_negative_sampling=look_alike"])
  # The validation split during pretraining: random negatives from image records, no look-alikes.
  config = config.replace(data=toy_data_config.as_dict(), model={"use_precomputed_features": False})
  config = config.replace(data={"negative_sampling": "look_alike"}, train={"global_batch_size": 4})
  batch = next(iter(pretrain.build_pipeline_dataset(config, "validation")))
  assert set(batch["tia_label"].numpy().tolist()) == {0, 1}
