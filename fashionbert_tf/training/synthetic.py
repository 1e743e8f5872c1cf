"""Small synthetic pre-training batches (batch contract) for tests and the train-step benchmark.

A fixed pool of `num_products` fake products, each with its own token sequence and its own
patch features (a learnable pattern: a memorizable pool, not noise). Positive pairs pair a product's
text with its own features, negatives with another product's; masking follows the contract (masked
positions hold [MASK] = `mask_id`, masked patches are listed for the model to zero). Everything is
drawn from a NumPy generator with a fixed seed, so two calls give the same batches.
"""

import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract


def synthetic_examples(num_examples, vocab_size, feature_dim, text_length=12,
                       num_masked_tokens=2, num_masked_patches=6, num_products=8, seed=0,
                       image_mode=False):
  """A dict of NumPy arrays, `num_examples` pairs per the batch contract (half positive).

  Args:
    num_examples: pairs (rows).
    vocab_size: token ids are drawn from [5, vocab_size); 1 is [CLS], 2 [SEP], 3 [MASK].
    feature_dim: D of `patch_features` (ignored when `image_mode`).
    text_length: T, including [CLS] and [SEP].
    num_masked_tokens: P; num_masked_patches: M.
    num_products: size of the product pool the pairs are drawn from.
    seed: NumPy seed.
    image_mode: give uint8 `image` [256, 256, 3] instead of `patch_features`.
  """
  if vocab_size <= 8:
    raise ValueError(f"vocab_size must exceed 8 for synthetic data, got {vocab_size}")
  rng = np.random.default_rng(seed)
  texts = rng.integers(5, vocab_size, size=(num_products, text_length)).astype(np.int32)
  texts[:, 0], texts[:, -1] = 1, 2
  if image_mode:
    images = rng.integers(0, 256, size=(num_products, contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3),
                          dtype=np.uint8)
  else:
    features = (rng.normal(size=(num_products, contract.NUM_PATCHES, feature_dim)) * 2.0).astype(
        np.float32)
  text_product = rng.integers(0, num_products, size=num_examples)
  label = (np.arange(num_examples) % 2 == 0).astype(np.int32)
  offset = rng.integers(1, num_products, size=num_examples)
  image_product = np.where(label == 1, text_product, (text_product + offset) % num_products)

  word_ids = texts[text_product].copy()
  positions = np.stack([rng.choice(np.arange(1, text_length - 1), num_masked_tokens, replace=False)
                        for _ in range(num_examples)]).astype(np.int32)
  examples = _masked_examples(rng, word_ids, positions, num_masked_patches, label)
  if image_mode:
    examples[contract.IMAGE_KEY] = images[image_product]
  else:
    examples[contract.FEATURES_KEY] = features[image_product]
  return examples


def _masked_examples(rng, word_ids, positions, num_masked_patches, label):
  """The contract's text, masking and label keys: the words at `positions` [N, P] become [MASK]
  (id 3; their ids go to `masked_lm_ids`) and `num_masked_patches` random patches per pair are
  listed for MPM. `word_ids` int32 [N, T] is modified in place."""
  masked_ids = np.take_along_axis(word_ids, positions, 1)
  np.put_along_axis(word_ids, positions, 3, 1)
  patch_positions = np.stack([rng.choice(contract.NUM_PATCHES, num_masked_patches, replace=False)
                              for _ in range(len(word_ids))]).astype(np.int32)
  return {
      "input_word_ids": word_ids,
      "input_mask": np.ones_like(word_ids),
      "input_type_ids": np.zeros_like(word_ids),
      "masked_lm_positions": positions,
      "masked_lm_ids": masked_ids,
      "masked_lm_weights": np.ones(positions.shape, np.float32),
      "masked_patch_positions": patch_positions,
      "masked_patch_weights": np.ones(patch_positions.shape, np.float32),
      "tia_label": label,
  }


def synthetic_dataset(global_batch_size, repeat=True, **kwargs):
  """`tf.data.Dataset` of global batches of `synthetic_examples(**kwargs)` (drop_remainder)."""
  dataset = tf.data.Dataset.from_tensor_slices(synthetic_examples(**kwargs))
  if repeat:
    dataset = dataset.repeat()
  return dataset.batch(global_batch_size, drop_remainder=True)


def tiny_model_overrides(feature_dim=8, vocab_size=40):
  """`model.*` overrides of a tiny random FashionBERT (2 layers, hidden 32) for tests.

  Synthetic features are already centred with a spread of 2 (`synthetic_examples`), and there are
  no TFRecords to take statistics from: no patch-feature standardization.
  """
  return {
      "patch_feature_normalization": "none",
      "encoder_format": "none", "backbone": "linear", "num_layers": 2, "hidden_size": 32,
      "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": vocab_size,
      "feature_dim": feature_dim, "max_position_embeddings": 128, "dropout_rate": 0.0,
      "attention_dropout_rate": 0.0, "use_precomputed_features": True,
  }


def attribute_matching_examples(num_pairs, num_products, vocab_size=40, feature_dim=16,
                                text_length=10, num_attributes=6, product_seed=0, pair_seed=1,
                                code_seed=7, code_scale=1.5, num_masked_patches=6):
  """A small toy set where matching text and image needs both: pairs of a learnable rule.

  Each product has one attribute a in [0, num_attributes) (think "colour"). Its text is
  `[CLS] w ... w [SEP]` of random filler words with the attribute's word (id 5 + a) at a random
  position; its image is `patch_features` [64, D] of per-product Gaussian noise plus `code_scale`
  times the attribute's code (a fixed random vector, the same for every product: `code_seed`).
  Products drawn with another `product_seed` are new products sharing the rule, so accuracy on them
  is held-out accuracy. Half the pairs are positive (a product's own text and image); a negative
  pairs an image with the text of a product whose attribute differs. Neither the text nor the image
  alone says whether a pair matches. One filler-or-attribute word per text is masked for MLM (its
  id in `masked_lm_ids`) and `num_masked_patches` patches for MPM, as the contract says.

  Returns a dict of NumPy arrays per the batch contract (patch-feature mode), `num_pairs` rows.
  """
  if vocab_size <= 5 + num_attributes:
    raise ValueError(f"vocab_size {vocab_size} leaves no filler words for {num_attributes} "
                     "attributes")
  codes = np.random.default_rng(code_seed).normal(size=(num_attributes, feature_dim))
  rng = np.random.default_rng(product_seed)
  attribute = rng.integers(0, num_attributes, num_products)
  texts = rng.integers(5 + num_attributes, vocab_size,
                       size=(num_products, text_length)).astype(np.int32)
  texts[:, 0], texts[:, -1] = 1, 2
  texts[np.arange(num_products), rng.integers(1, text_length - 1, num_products)] = 5 + attribute
  features = (rng.normal(size=(num_products, contract.NUM_PATCHES, feature_dim)) +
              code_scale * codes[attribute][:, None, :]).astype(np.float32)

  rng = np.random.default_rng(pair_seed)
  image_product = rng.integers(0, num_products, num_pairs)
  label = (np.arange(num_pairs) % 2 == 0).astype(np.int32)
  text_product = image_product.copy()
  for i in np.flatnonzero(label == 0):
    others = np.flatnonzero(attribute != attribute[image_product[i]])
    text_product[i] = rng.choice(others)
  word_ids = texts[text_product].copy()
  positions = rng.integers(1, text_length - 1, size=(num_pairs, 1)).astype(np.int32)
  examples = _masked_examples(rng, word_ids, positions, num_masked_patches, label)
  examples[contract.FEATURES_KEY] = features[image_product]
  return examples
