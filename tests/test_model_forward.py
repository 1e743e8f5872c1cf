"""FashionBERT forward pass: output contract, patch masking, text-length independence, VSL."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from fashionbert_tf.configs.model import ModelConfig
from fashionbert_tf.data import contract
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.modeling import patch_embedding

FEATURE_DIM = 16
VOCAB = 100


def tiny_config(**overrides):
  values = dict(backbone="linear", feature_dim=FEATURE_DIM, encoder_format="none", num_layers=2,
                vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=512)
  values.update(overrides)
  return ModelConfig(**values)


@pytest.fixture(scope="module")
def model():
  tf.random.set_seed(1)
  return model_builder.build_fashionbert(tiny_config())


def text_batch(lengths, pad_to=None, seed=0):
  """[CLS] w.. [SEP] rows of the given real lengths, padded to the longest (or `pad_to`)."""
  rng = np.random.default_rng(seed)
  width = pad_to or max(lengths)
  ids = np.zeros([len(lengths), width], np.int32)
  mask = np.zeros_like(ids)
  for row, length in enumerate(lengths):
    ids[row, :length] = rng.integers(5, VOCAB, size=length)
    ids[row, 0], ids[row, length - 1] = 2, 3
    mask[row, :length] = 1
  return {"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask),
          "input_type_ids": tf.zeros_like(tf.constant(ids))}


def features(batch_size, seed=0):
  return tf.constant(np.random.default_rng(seed).normal(size=[batch_size, 64, FEATURE_DIM]),
                     tf.float32)


def test_outputs_follow_the_contract(model):
  batch = text_batch([7, 4])
  batch.update(patch_features=features(2),
               masked_lm_positions=tf.constant([[1, 2, 0], [1, 0, 0]]),
               masked_lm_ids=tf.constant([[5, 6, 0], [7, 0, 0]]),
               masked_lm_weights=tf.constant([[1., 1., 0.], [1., 0., 0.]]),
               masked_patch_positions=tf.constant([[3, 9], [60, 0]]),
               masked_patch_weights=tf.constant([[1., 1.], [1., 0.]]),
               tia_label=tf.constant([1, 0]))
  out = model(batch, training=False)
  expected = {"sequence_output": [2, 7 + 64, 32], "pooled_output": [2, 32], "tia_logits": [2, 2],
              "mlm_logits": [2, 3, VOCAB], "mpm_logits": [2, 2, FEATURE_DIM],
              "mpm_targets": [2, 2, FEATURE_DIM]}
  assert set(out) == set(expected)
  for key, shape in expected.items():
    assert out[key].shape.as_list() == shape, key
    assert out[key].dtype == tf.float32, key
  # MPM targets: the original (unmasked) features of the masked patches.
  original = batch["patch_features"].numpy()
  np.testing.assert_array_equal(out["mpm_targets"][0].numpy(), original[0, [3, 9]])
  np.testing.assert_array_equal(out["mpm_targets"][1, 0].numpy(), original[1, 60])
  # Without the optional keys: only the three always-present outputs.
  plain = model({**text_batch([5]), "patch_features": features(1)}, training=False)
  assert set(plain) == {"sequence_output", "pooled_output", "tia_logits"}


def test_zero_masked_patches_zeroes_only_weighted_slots():
  feats = features(2)
  zeroed = patch_embedding.zero_masked_patches(
      feats, tf.constant([[3, 9, 0], [0, 0, 0]]), tf.constant([[1., 1., 0.], [0., 0., 0.]]))
  zeroed, feats = zeroed.numpy(), feats.numpy()
  assert np.all(zeroed[0, [3, 9]] == 0)
  keep = [i for i in range(64) if i not in (3, 9)]
  np.testing.assert_array_equal(zeroed[0, keep], feats[0, keep])  # Padding slot spares patch 0.
  np.testing.assert_array_equal(zeroed[1], feats[1])


def test_masked_patch_is_seen_as_a_zero_feature(model):
  text = text_batch([6])
  feats = features(1)
  masked = model({**text, "patch_features": feats,
                  "masked_patch_positions": tf.constant([[5, 0]]),
                  "masked_patch_weights": tf.constant([[1., 0.]])}, training=False)
  by_hand = feats.numpy().copy()
  by_hand[0, 5] = 0.0
  zeroed = model({**text, "patch_features": tf.constant(by_hand)}, training=False)
  unmasked = model({**text, "patch_features": feats}, training=False)
  np.testing.assert_allclose(masked["sequence_output"], zeroed["sequence_output"], atol=1e-6)
  assert np.max(np.abs(masked["sequence_output"] - unmasked["sequence_output"])) > 1e-3


def test_patch_embedding_does_not_depend_on_text_length(model):
  feats = features(1)
  patch_embeddings = model.patch_embedding(feats)
  rows = []
  for length in (3, 40):
    inputs = {**text_batch([length]), "dense_inputs": patch_embeddings}
    embedded = model.encoder.input_embeddings(inputs)  # [1, T+64, E], after LayerNorm.
    assert embedded.shape[1] == length + 64
    rows.append(embedded[:, length:].numpy())
  np.testing.assert_allclose(rows[0], rows[1], atol=1e-6)
  # And they are the projected features + patch position + segment 1, nothing text-dependent.
  table = model.encoder.type_embedding_layer.embeddings.numpy()
  by_hand = (model.patch_embedding.projection(feats).numpy() +
             model.patch_embedding.patch_position_embeddings.numpy()[None] + table[1][None, None])
  np.testing.assert_allclose(patch_embeddings.numpy(), by_hand, atol=1e-6)


def test_padded_to_448_gives_the_same_match_probability(model):
  feats = features(2, seed=3)
  short = model({**text_batch([9, 5]), "patch_features": feats}, training=False)
  padded = model({**text_batch([9, 5], pad_to=contract.MAX_TEXT_LENGTH), "patch_features": feats},
                 training=False)
  assert padded["sequence_output"].shape[1] == contract.MAX_SEQUENCE_LENGTH
  p_short = tf.nn.softmax(short["tia_logits"])[:, 1].numpy()
  p_padded = tf.nn.softmax(padded["tia_logits"])[:, 1].numpy()
  np.testing.assert_allclose(p_short, p_padded, atol=1e-5)
  # Patch outputs too (they sit after the padding).
  np.testing.assert_allclose(short["sequence_output"][:, 9:].numpy(),
                             padded["sequence_output"][:, contract.MAX_TEXT_LENGTH:].numpy(),
                             atol=1e-4)


def test_image_mode_equals_precomputed_features(model):
  images = tf.constant(np.random.default_rng(4).integers(0, 256, [2, 256, 256, 3]), tf.uint8)
  precomputed = model.compute_patch_features(images)
  assert precomputed.shape.as_list() == [2, 64, FEATURE_DIM] and precomputed.dtype == tf.float32
  text = text_batch([6, 8])
  online = model({**text, "image": images}, training=False)
  offline = model({**text, "patch_features": precomputed}, training=False)
  np.testing.assert_allclose(online["tia_logits"], offline["tia_logits"], atol=1e-6)


def test_shared_variables_are_encoder_and_patch_embedding_only(model):
  shared = {v.name for v in model.shared_variables}
  assert len(shared) == len(model.shared_variables)  # No duplicates (type table is shared).
  assert any("word_embeddings" in n for n in shared)
  assert any("type_embeddings" in n for n in shared)
  assert any("patch_position_embeddings" in n for n in shared)
  assert any("patch_embedding/projection/kernel" in n for n in shared)
  assert any("transformer/layer_1/" in n for n in shared)
  assert not any(h in n for n in shared for h in ("cls/predictions", "mpm/", "tia/", "pooler"))


def test_outputs_are_float32_under_mixed_precision():
  tf_keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = model_builder.build_fashionbert(tiny_config(num_layers=1))
    batch = {**text_batch([5]), "patch_features": features(1),
             "masked_lm_positions": tf.constant([[1]]),
             "masked_patch_positions": tf.constant([[2]]),
             "masked_patch_weights": tf.constant([[1.]])}
    out = model(batch, training=False)
    assert model.encoder.compute_dtype == "float16"
    for key, value in out.items():
      assert value.dtype == tf.float32, key
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_mlm_output_side_can_leave_the_word_embeddings_alone(policy):
  """model.mlm_output_trains_word_embeddings=false: the same MLM logits, but the MLM loss reaches
  only the embedding rows of words in the input (BERT's tied head: every row, through the softmax
  over the vocabulary)."""
  batch = text_batch([7, 5], seed=3)
  batch.update(patch_features=features(2), masked_lm_positions=tf.constant([[1, 2], [3, 0]]))
  targets = tf.constant([[5, 6], [7, 0]])
  real = batch["input_mask"].numpy() == 1
  used = set(batch["input_word_ids"].numpy()[real].tolist())   # not padding: no one reads it
  results = {}
  tf_keras.mixed_precision.set_global_policy(policy)
  try:
    weights = None
    for trains in (True, False):
      model = model_builder.build_fashionbert(
          tiny_config(mlm_output_trains_word_embeddings=trains))
      if weights is None:
        weights = model.get_weights()
      model.set_weights(weights)
      with tf.GradientTape() as tape:
        logits = tf.cast(model(batch, training=False)["mlm_logits"], tf.float32)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
      table = model.encoder.get_embedding_table()
      gradient = tf.convert_to_tensor(tape.gradient(loss, table)).numpy()
      results[trains] = (logits.numpy(), np.abs(gradient).sum(axis=1))
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")
  np.testing.assert_array_equal(results[True][0], results[False][0])
  unused = sorted(set(range(VOCAB)) - used - {0})
  assert (results[True][1][unused] > 0).all()
  assert (results[False][1][unused] == 0).all()
  assert (results[False][1][sorted(used)] > 0).all()
