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
