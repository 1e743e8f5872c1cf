"""Matching scores of (text, image) pairs: P(match) = softmax(tia_logits)[:, 1] (paper 3.1).

A `PairScorer` scores batches in two steps, so evaluation can reuse work:
  1. `patch_features(image uint8 [N, 256, 256, 3]) -> float32 [N, 64, D]`: the backbone alone,
     once per unique image;
  2. `match_probability(input_word_ids, input_mask, input_type_ids [B, T], patch_features
     [B, 64, D]) -> float32 [B]`: the encoder + TIA head on a batch of pairs.
Texts are padded only to the batch's longest (variable sequence length, paper 3.4 / Table 4); the
sequence is `[CLS] text [SEP] p_1..p_64`, T + 64 positions, never padded to 512.

Two implementations with the same interface: `KerasPairScorer` (a restored `FashionBertModel`) and
`SavedModelPairScorer` (an export of `fashionbert_tf.serving.export`, through its `score_features`
signature and its `compute_patch_features` function).
"""

import tensorflow as tf

from fashionbert_tf.data import contract


def match_probability_from_logits(tia_logits):
  """float [B, 2] -> float32 [B]: softmax over the two TIA classes, class 1 (= match)."""
  return tf.nn.softmax(tf.cast(tia_logits, tf.float32), axis=-1)[:, 1]


def model_match_probability(model, input_word_ids, input_mask, input_type_ids, patch_features):
  """P(match) [B] of a `FashionBertModel` in inference mode (dropout off, no masking)."""
  outputs = model(
      {"input_word_ids": input_word_ids, "input_mask": input_mask,
       "input_type_ids": input_type_ids, contract.FEATURES_KEY: patch_features},
      training=False)
  return match_probability_from_logits(outputs["tia_logits"])


def pad_text_inputs(input_word_ids, input_mask, input_type_ids, length=contract.MAX_TEXT_LENGTH):
  """Pads [B, T] text inputs with zeros (mask 0) to [B, length]: the non-VSL baseline.

  With `length` = 448 the encoder sees 448 + 64 = 512 positions, the padded layout VSL avoids.
  """
  def pad(tensor):
    tensor = tf.convert_to_tensor(tensor, tf.int32)
    extra = length - tf.shape(tensor)[1]
    return tf.pad(tensor, [[0, 0], [0, tf.maximum(extra, 0)]])
  return pad(input_word_ids), pad(input_mask), pad(input_type_ids)


def text_signature():
  return [tf.TensorSpec([None, None], tf.int32, name=name) for name in contract.TEXT_KEYS]


def features_signature(feature_dim):
  return tf.TensorSpec([None, contract.NUM_PATCHES, feature_dim], tf.float32,
                       name=contract.FEATURES_KEY)


def image_signature():
  return tf.TensorSpec([None, contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3], tf.uint8,
                       name=contract.IMAGE_KEY)


class PairScorer:
  """Interface: see the module docstring."""

  feature_dim = None

  def patch_features(self, image):
    raise NotImplementedError

  def match_probability(self, input_word_ids, input_mask, input_type_ids, patch_features):
    raise NotImplementedError


class KerasPairScorer(PairScorer):
  """Scores with a `FashionBertModel` through `tf.function`s with relaxed shapes (no retracing)."""

  def __init__(self, model, feature_dim):
    self.model = model
    self.feature_dim = int(feature_dim)
    self._score = tf.function(
        lambda ids, mask, types, features: model_match_probability(
            model, ids, mask, types, features),
        input_signature=text_signature() + [features_signature(self.feature_dim)])
    self._features = tf.function(model.compute_patch_features,
                                 input_signature=[image_signature()])

  def patch_features(self, image):
    return self._features(tf.convert_to_tensor(image, tf.uint8))

  def match_probability(self, input_word_ids, input_mask, input_type_ids, patch_features):
    return self._score(tf.convert_to_tensor(input_word_ids, tf.int32),
                       tf.convert_to_tensor(input_mask, tf.int32),
                       tf.convert_to_tensor(input_type_ids, tf.int32),
                       tf.convert_to_tensor(patch_features, tf.float32)).numpy()


class SavedModelPairScorer(PairScorer):
  """Scores with an exported SavedModel (`score_features` + `compute_patch_features`)."""

  def __init__(self, export_path):
    import tensorflow_text  # pylint: disable=g-import-not-at-top,unused-import  (registers ops)
    self.export_path = export_path
    self.loaded = tf.saved_model.load(export_path)
    self._score = self.loaded.signatures["score_features"]
    spec = self._score.structured_input_signature[1][contract.FEATURES_KEY]
    self.feature_dim = int(spec.shape[-1])

  def patch_features(self, image):
    return self.loaded.compute_patch_features(tf.convert_to_tensor(image, tf.uint8))

  def match_probability(self, input_word_ids, input_mask, input_type_ids, patch_features):
    outputs = self._score(
        input_word_ids=tf.convert_to_tensor(input_word_ids, tf.int32),
        input_mask=tf.convert_to_tensor(input_mask, tf.int32),
        input_type_ids=tf.convert_to_tensor(input_type_ids, tf.int32),
        patch_features=tf.convert_to_tensor(patch_features, tf.float32))
    return outputs["match_probability"].numpy()
