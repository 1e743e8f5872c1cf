"""The tf.data pretraining pipeline: batch contract, padding, truncation, pairing, sharding."""

import collections
import hashlib
import io
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import pairing
from fashionbert_tf.data import pipeline
from fashionbert_tf.data import prepare
from fashionbert_tf.data import records
from fashionbert_tf.data import tokenization


def _image_key(image):
  return hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def train_index(toy_data_config):
  """image hash -> (product id, (category, subcategory)); product id -> description token ids."""
  images = {}
  for record in records.read_records(
      pipeline.split_file_pattern(toy_data_config, "train")):
    images[_image_key(record["image"].numpy())] = (
        int(record["product_id"]), (record["category"].numpy(), record["subcategory"].numpy()))
  sampler = pairing.NegativeSampler.from_records(
      pipeline.split_file_pattern(toy_data_config, "train"))
  tokenizer = tokenization.build_tokenizer(toy_data_config)
  ids, mask, _ = tokenization.text_to_model_inputs(tokenizer, sampler.descriptions)
  texts = {int(product): tuple(row[:length]) for product, row, length in
           zip(sampler.product_ids, ids.numpy(), mask.numpy().sum(1))}
  return images, texts, tokenizer


@pytest.fixture(scope="module")
def stream(toy_data_config):
  """Three epochs' worth of batches (size 8) of the repeated, shuffled training stream."""
  num_records = prepare.load_dataset_info(toy_data_config.tfrecord_dir)["splits"]["train"][
      "num_records"]
  dataset = pipeline.build_pretraining_dataset(toy_data_config, "train", 8)
  return dataset, [{k: v.numpy() for k, v in batch.items()}
                   for batch in dataset.take(3 * 2 * num_records // 8)]


def _original_ids(batch, row):
  """The example's text before masking, without padding."""
  ids = batch["input_word_ids"][row].copy()
  weights = batch["masked_lm_weights"][row]
  ids[batch["masked_lm_positions"][row][weights > 0]] = batch["masked_lm_ids"][row][weights > 0]
  return tuple(ids[:batch["input_mask"][row].sum()])


def test_batches_follow_the_contract_padded_to_their_longest_text(toy_data_config, stream):
  dataset, batches = stream
  signature = contract.batch_signature(image_mode=True)
  assert set(dataset.element_spec) == set(signature)
  again = [{k: v.numpy() for k, v in b.items()} for b in
           pipeline.build_pretraining_dataset(toy_data_config, "train", 8).take(4)]
  for batch, same in zip(batches, again):
    for key in signature:
      np.testing.assert_array_equal(batch[key], same[key])        # seeded: reproducible
  lengths_seen = set()
  for batch in batches:
    for key, spec in signature.items():
      assert batch[key].dtype == spec.dtype.as_numpy_dtype, key
      assert spec.shape.is_compatible_with(batch[key].shape), key
    lengths = batch["input_mask"].sum(1)
    width = batch["input_word_ids"].shape[1]
    assert width == lengths.max() <= contract.MAX_TEXT_LENGTH     # padded to its own longest
    lengths_seen.add(width)
    for row, length in enumerate(lengths):
      assert (batch["input_mask"][row, :length] == 1).all()
      assert (batch["input_mask"][row, length:] == 0).all()
      assert (batch["input_word_ids"][row, length:] == 0).all()
      real = batch["masked_lm_weights"][row] > 0
      assert (batch["masked_lm_positions"][row][real] < length - 1).all()
      assert (batch["masked_lm_positions"][row][real] > 0).all()
    assert (batch["input_type_ids"] == 0).all()
    assert batch["masked_lm_weights"].shape[1] == toy_data_config.max_predictions_per_seq
    assert batch["masked_patch_weights"].shape[1] == 7
    assert set(np.unique(batch["tia_label"])) <= {0, 1}
  assert len(lengths_seen) > 1        # not padded to a fixed length


def test_pairs_negatives_and_epochs(toy_data_config, train_index, stream):
  images, texts, _ = train_index
  groups = collections.Counter(group for _, group in set(images.values()))
  num_records = prepare.load_dataset_info(toy_data_config.tfrecord_dir)["splits"]["train"][
      "num_records"]
  # One epoch, no repeat: exactly one positive and one negative per image (ratio 1:1).
  single = pipeline.build_pretraining_dataset(toy_data_config, "train", 16, repeat=False)
  labels = np.concatenate([b["tia_label"].numpy() for b in single])
  assert (labels == 1).sum() == num_records and (labels == 0).sum() == num_records
  # Three epochs of a repeated stream: check every example, collect negatives per image.
  negatives = collections.defaultdict(list)
  same_group = cross_group_allowed = 0
  for batch in stream[1]:
    for row in range(len(batch["tia_label"])):
      product, group = images[_image_key(batch["image"][row])]
      text = _original_ids(batch, row)
      owners = {p for p, t in texts.items() if t == text}
      if batch["tia_label"][row] == 1:
        assert product in owners
      else:
        assert product not in owners                       # never the product's own text
        negative = min(owners)
        negatives[product].append(negative)
        if groups[group] > 1:
          negative_group = next(g for p, g in images.values() if p == negative)
          assert negative_group == group                   # same subcategory when possible
          same_group += 1
        else:
          cross_group_allowed += 1
  assert same_group > 0
  repeated = [draws for draws in negatives.values() if len(draws) >= 3]
  changed = sum(len(set(draws)) > 1 for draws in repeated)
  assert len(repeated) > 10 and changed / len(repeated) > 0.6    # re-drawn every epoch


@pytest.mark.parametrize("ratio", [0.0, 0.5, 2.0])
def test_negative_ratio_is_kept(ratio):
  sampler = pairing.NegativeSampler(np.arange(6), [f"text {i}" for i in range(6)],
                                    ["a", "a", "a", "b", "b", "c"])
  product_ids = tf.constant(np.tile(np.arange(6), 500), tf.int64)
  descriptions = tf.constant(np.tile([f"text {i}" for i in range(6)], 500))
  pairs = pairing.pair_chunk(product_ids, descriptions, sampler, ratio, tf.constant([1, 2]))
  labels = pairs["tia_label"].numpy()
  assert (labels == 1).sum() == 3000
  assert abs((labels == 0).sum() / 3000 - ratio) < 0.05
  own = product_ids.numpy()[pairs["image_index"].numpy()]
  negative = pairs["negative_product_id"].numpy()
  is_negative = labels == 0
  assert (negative[is_negative] != own[is_negative]).all()
  group = np.array([0, 0, 0, 1, 1, 2])
  same = group[negative[is_negative]] == group[own[is_negative]]
  alone = own[is_negative] == 5                           # product 5 is alone in group "c"
  assert same[~alone].all() and not same[alone].any()
  texts = pairs["text"].numpy()
  np.testing.assert_array_equal(texts[is_negative],
                                [f"text {p}".encode() for p in negative[is_negative]])


def _write_records(path, descriptions):
  image = np.zeros([256, 256, 3], np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  with tf.io.TFRecordWriter(path) as writer:
    for index, description in enumerate(descriptions):
      row = {"record_id": index, "product_id": index, "description": description,
             "name": "n", "category": "TOPS", "subcategory": "SHIRTS", "pose": "id_gridfs_1"}
      writer.write(records.make_example(row, buffer.getvalue()).SerializeToString())


def test_long_texts_are_truncated_by_whole_words_and_counted(toy_data_config, tmp_path,
                                                             train_index):
  tokenizer = train_index[2]
  # 445 one-piece words, then "zebra" (5 pieces: z ##e ##b ##r ##a) crosses the 446 limit.
  long_text = " ".join(["shirt", "pocket"] * 222 + ["shirt", "zebra", "red"])
  descriptions = [long_text, "red shirt", "navy collar with black dots"]
  path = str(tmp_path / "long.tfrecord")
  _write_records(path, descriptions)
  sampler = pairing.NegativeSampler.from_records(path)
  assert pipeline.log_truncation(tokenizer, sampler, 448) == 1
  full = tokenizer.tokenize(descriptions).merge_dims(1, 2).to_list()
  # Without masking (as TIA evaluation reads pairs): plain `[CLS] text [SEP]`, no masked_* keys.
  dataset = pipeline.build_pretraining_dataset(toy_data_config, "train", 2, repeat=False,
                                               file_pattern=path, masking_enabled=False)
  assert set(dataset.element_spec) == {"input_word_ids", "input_mask", "input_type_ids",
                                       "image", "tia_label"}
  lengths = []
  for batch in dataset:
    batch = {k: v.numpy() for k, v in batch.items()}
    assert batch["input_word_ids"].shape[1] <= contract.MAX_TEXT_LENGTH
    for row in range(len(batch["tia_label"])):
      text = tuple(batch["input_word_ids"][row][:batch["input_mask"][row].sum()])
      body = list(text[1:-1])
      lengths.append(len(text))
      if len(body) > 100:
        assert body == full[0][:445] and len(text) == 445 + 2      # whole words only
      else:
        assert body in full[1:]                                    # short texts untouched
  assert len(full[0]) == 451 and max(lengths) == 447 and len(lengths) == 6
  ids, mask, _ = tokenization.text_to_model_inputs(tokenizer, descriptions)
  assert ids.shape == (3, 447) and mask.numpy().sum(1).tolist()[1:] == [
      len(full[1]) + 2, len(full[2]) + 2]


def test_input_context_shards_by_file(toy_data_config):
  """Pipeline 1 of 2 reads exactly the second of the two shard files, batches per replica."""
  context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                       num_replicas_in_sync=2)
  dataset = pipeline.build_pretraining_dataset(toy_data_config, "train", 16,
                                               input_context=context, repeat=False)
  seen = collections.Counter()
  for batch in dataset:
    assert batch["tia_label"].shape[0] <= 8                     # per-replica batch size
    seen.update(_image_key(image) for image in batch["image"].numpy())
  files = records.list_record_files(pipeline.split_file_pattern(toy_data_config, "train"))
  second_file = {_image_key(r["image"].numpy()) for r in records.read_records(files[1])}
  assert set(seen) == second_file
  assert set(seen.values()) == {2}                               # positive + negative each


def test_missing_tfrecords_give_a_clear_error(toy_data_config, tmp_path):
  config = toy_data_config.replace(tfrecord_dir=str(tmp_path / "none"))
  with pytest.raises(records.RecordFileError, match="prepare-data"):
    pipeline.build_pretraining_dataset(config, "train", 4)
  with pytest.raises(ValueError, match="split"):
    pipeline.build_pretraining_dataset(toy_data_config, "test", 4)


# Negatives by record: a product's text must be as likely in a negative as in a positive, whatever
# its number of poses (data/pairing.py module docstring). Products with 1..6 poses, as Fashion-Gen.
POSE_GROUPS = ("a", "b")
PRODUCTS_PER_GROUP = 30


def _pose_products(per_group=PRODUCTS_PER_GROUP):
  """product ids, pose counts and groups: per group per_group / 6 products of each count 1..6."""
  product_ids = 1000 + 7 * np.arange(len(POSE_GROUPS) * per_group)
  poses = 1 + np.arange(len(product_ids)) % 6
  groups = [POSE_GROUPS[i // per_group] for i in range(len(product_ids))]
  return product_ids, poses, groups


def _match_rate_by_pose_count(text_products, labels, poses_of):
  """P(label = 1 | the text's product has n poses) for each n, from paired examples."""
  pose_counts = np.array([poses_of[p] for p in text_products])
  return {n: labels[pose_counts == n].mean() for n in sorted(set(poses_of.values()))}


@pytest.mark.parametrize("negative_sampling", ["same_subcategory", "random"])
def test_negatives_are_a_uniform_record_of_the_other_products(negative_sampling):
  """Each product's share of an image's negatives is its share of the other products' records."""
  product_ids, poses, groups = _pose_products(per_group=12)
  # One more product, alone in group "c": its negatives come from any other product.
  product_ids = np.append(product_ids, 5)
  poses, groups = np.append(poses, 3), groups + ["c"]
  sampler = pairing.NegativeSampler(product_ids, [f"text {p}" for p in product_ids], groups,
                                    record_counts=poses, negative_sampling=negative_sampling)
  assert sampler.num_records == poses.sum()
  assert sampler.num_fallback_products == (1 if negative_sampling == "same_subcategory" else 0)
  draws = 10000
  own = np.repeat(product_ids, draws)
  texts, negative = sampler.sample(tf.constant(own), tf.constant([3, 4]))
  negative = negative.numpy()
  np.testing.assert_array_equal(texts.numpy(), [f"text {p}".encode() for p in negative])
  assert (negative != own).all()
  group_of = dict(zip(product_ids.tolist(), groups))
  poses_of = dict(zip(product_ids.tolist(), poses.tolist()))
  worst = 0.0
  for product in product_ids:
    chosen = negative[own == product]
    if negative_sampling == "random" or group_of[product] == "c":
      pool = [p for p in product_ids if p != product]
    else:
      pool = [p for p in product_ids if p != product and group_of[p] == group_of[product]]
      assert all(group_of[p] == group_of[product] for p in chosen)     # same group when possible
    pool_records = sum(poses_of[p] for p in pool)
    shares = collections.Counter(chosen.tolist())
    for p in pool:
      worst = max(worst, abs(shares[p] / draws - poses_of[p] / pool_records))
    assert {group_of[p] for p in chosen} == {group_of[p] for p in pool}  # random: all groups
  # Shares are at most 6/36 with 10000 draws each: standard error <= 0.0038. Products drawn
  # uniformly would be off by >= 0.06 (same group: 1/11 instead of 1/41 for a 1-pose product) and
  # >= 0.03 (random: 1/24 instead of 1/84).
  assert worst < 0.02, worst


def test_pair_labels_do_not_reveal_the_pose_count():
  """Over many records, P(label = 1 | text) ~ 1/2 for texts of 1-pose and 6-pose products alike."""
  product_ids, poses, groups = _pose_products()
  sampler = pairing.NegativeSampler(product_ids, [f"text {p}" for p in product_ids], groups,
                                    record_counts=poses)
  records_products = np.repeat(product_ids, poses)          # one record per pose
  epochs = 100
  chunk = tf.constant(np.tile(records_products, epochs), tf.int64)
  pairs = pairing.pair_chunk(chunk, tf.strings.as_string(chunk), sampler, 1.0,
                             tf.constant([5, 6]))
  labels = pairs["tia_label"].numpy()
  own = chunk.numpy()[pairs["image_index"].numpy()]
  text_products = np.where(labels == 1, own, pairs["negative_product_id"].numpy())
  rate = _match_rate_by_pose_count(text_products, labels,
                                   dict(zip(product_ids.tolist(), poses.tolist())))
  # Per pose count >= 2 * 10 * 100 examples (standard error <= 0.011); drawing the product
  # uniformly would give ~0.22 for 1 pose and ~0.63 for 6.
  for n, value in rate.items():
    assert abs(value - 0.5) < 0.04, (n, rate)


def test_pipeline_negatives_are_record_weighted(toy_data_config, tmp_path, train_index):
  """End to end: the sampler counts records per product; labels do not reveal the pose count."""
  tokenizer = train_index[2]
  product_ids, poses, groups = _pose_products()
  descriptions = {p: f"shirt {p} with {'dots' if g == 'a' else 'checks'}"
                  for p, g in zip(product_ids, groups)}
  path = str(tmp_path / "poses.tfrecord")
  buffer = io.BytesIO()
  Image.fromarray(np.zeros([256, 256, 3], np.uint8)).save(buffer, format="PNG")
  with tf.io.TFRecordWriter(path) as writer:
    for product, count, group in zip(product_ids, poses, groups):
      for pose in range(count):
        row = {"record_id": int(100 * product + pose), "product_id": int(product),
               "description": descriptions[product], "name": "n", "category": "TOPS",
               "subcategory": group, "pose": f"id_gridfs_{pose + 1}"}
        # The "image" features carry the product id, so a batch tells whose image it is.
        features = np.full([contract.NUM_PATCHES, 2], product, np.float32)
        writer.write(records.make_example(row, buffer.getvalue(), features).SerializeToString())
  sampler = pairing.NegativeSampler.from_records(path)
  np.testing.assert_array_equal(sampler.record_counts, poses)   # products already in id order
  random_sampler = pairing.NegativeSampler.from_records(path, "random")
  assert random_sampler is not sampler and len(random_sampler.group_names) == 1
  with pytest.raises(ValueError, match="data.negative_sampling.*same_subcategory"):
    pipeline.build_pretraining_dataset(toy_data_config.replace(negative_sampling="hardest"),
                                       "train", 8, file_pattern=path, image_mode=False)

  ids, mask, _ = tokenization.text_to_model_inputs(tokenizer,
                                                   [descriptions[p] for p in product_ids])
  owner = {tuple(row[:length]): p for p, row, length in
           zip(product_ids.tolist(), ids.numpy(), mask.numpy().sum(1))}
  group_of = dict(zip(product_ids.tolist(), groups))
  poses_of = dict(zip(product_ids.tolist(), poses.tolist()))
  epochs = 30
  streams = {}
  for mode in ("same_subcategory", "random"):
    config = toy_data_config.replace(negative_sampling=mode, pairing_chunk_size=64)
    dataset = pipeline.build_pretraining_dataset(config, "train", 64, file_pattern=path,
                                                 image_mode=False, masking_enabled=False)
    image_products, text_products, labels = [], [], []
    for batch in dataset.take(epochs * 2 * int(poses.sum()) // 64):
      image_products += batch[contract.FEATURES_KEY][:, 0, 0].numpy().astype(np.int64).tolist()
      for row, length in zip(batch["input_word_ids"].numpy(), batch["input_mask"].numpy().sum(1)):
        text_products.append(owner[tuple(row[:length])])
      labels += batch["tia_label"].numpy().tolist()
    streams[mode] = np.array(image_products), np.array(text_products), np.array(labels)
    image_products, text_products, labels = streams[mode]
    np.testing.assert_array_equal(labels == 1, image_products == text_products)
  image_products, text_products, labels = streams["same_subcategory"]
  assert all(group_of[i] == group_of[t] for i, t in zip(image_products, text_products))
  rate = _match_rate_by_pose_count(text_products, labels, poses_of)
  # >= 2 * 10 * 30 examples per pose count (standard error <= 0.02); uniform products: 0.22..0.63.
  for n, value in rate.items():
    assert abs(value - 0.5) < 0.07, (n, rate)
  # "random" ignores groups: about half of the negatives (105 of ~207 other records) cross over.
  image_products, text_products, labels = streams["random"]
  negatives = labels == 0
  crossed = np.mean([group_of[i] != group_of[t] for i, t in
                     zip(image_products[negatives], text_products[negatives])])
  assert 0.42 < crossed < 0.6, crossed
  rate = _match_rate_by_pose_count(text_products, labels, poses_of)
  for n, value in rate.items():
    assert abs(value - 0.5) < 0.07, (n, rate)


def test_negative_sampling_option_is_validated():
  from fashionbert_tf.configs import data as data_config_lib  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.configs import experiment as experiment_config  # pylint: disable=g-import-not-at-top
  assert data_config_lib.DataConfig().negative_sampling == "same_subcategory"
  with pytest.raises(ValueError, match=r"data.negative_sampling = 'hard'; expected one of "
                     r"\('same_subcategory', 'random', 'mixed', 'look_alike'\)"):
    data_config_lib.DataConfig(negative_sampling="hard").validate()
  with pytest.raises(ValueError, match="data.mixed_same_subcategory_fraction = 1.5"):
    data_config_lib.DataConfig(negative_sampling="mixed",
                               mixed_same_subcategory_fraction=1.5).validate()
  with pytest.raises(ValueError, match="data.negative_sampling"):
    experiment_config.load_config(None, ["data.negative_sampling=hard"])
  assert experiment_config.load_config(
      None, ["data.negative_sampling=random"]).data.negative_sampling == "random"
  with pytest.raises(ValueError, match="data.negative_sampling"):
    pairing.NegativeSampler([1, 2], ["a", "b"], ["g", "g"], negative_sampling="hard")


@pytest.mark.parametrize("fraction", [0.25, 0.75])
def test_mixed_negatives_come_from_the_own_group_at_the_configured_rate(fraction):
  """`mixed`: P(same group) = fraction + (1 - fraction) * (share of the group among the others)."""
  product_ids, poses, groups = _pose_products(per_group=12)
  sampler = pairing.NegativeSampler(product_ids, [f"text {p}" for p in product_ids], groups,
                                    record_counts=poses, negative_sampling="mixed",
                                    same_group_fraction=fraction)
  draws = 4000
  own = np.repeat(product_ids, draws)
  _, negative = sampler.sample(tf.constant(own), tf.constant([8, 9]))
  negative = negative.numpy()
  assert (negative != own).all()
  group_of = dict(zip(product_ids.tolist(), groups))
  poses_of = dict(zip(product_ids.tolist(), poses.tolist()))
  for product in product_ids[:6]:
    others = [p for p in product_ids if p != product]
    group_share = (sum(poses_of[p] for p in others if group_of[p] == group_of[product]) /
                   sum(poses_of[p] for p in others))
    expected = fraction + (1 - fraction) * group_share
    same = np.mean([group_of[p] == group_of[product] for p in negative[own == product]])
    assert abs(same - expected) < 0.04, (product, same, expected)   # standard error <= 0.008
