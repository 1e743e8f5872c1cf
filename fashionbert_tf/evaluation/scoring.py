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

import json
import os

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


def bucketed_length(length, bucket, max_length=contract.MAX_TEXT_LENGTH):
  """`length` rounded up to a multiple of `bucket`, but never past max(max_length, length).

  Works on Python ints and on int32 scalar tensors. bucket <= 0 returns `length` unchanged.
  """
  if bucket <= 0:
    return length
  if isinstance(length, int):
    return min(-(-length // bucket) * bucket, max(max_length, length))
  rounded = (length + bucket - 1) // bucket * bucket
  return tf.minimum(rounded, tf.maximum(max_length, length))


def pad_to_length_bucket(input_word_ids, input_mask, input_type_ids, bucket,
                         max_length=contract.MAX_TEXT_LENGTH):
  """Pads [B, T] text inputs with zeros (mask 0) to [B, bucketed_length(T)].

  For XLA (`jit_compile`): it compiles once per input shape, so sequence lengths are rounded up to
  a few buckets (multiples of `bucket`, e.g. 16: at most 448 / 16 = 28 shapes) instead of every T.
  Padding is masked out of attention, so P(match) does not change (up to float rounding).
  """
  if bucket <= 0:
    return input_word_ids, input_mask, input_type_ids
  length = tf.shape(input_word_ids)[1]
  extra = bucketed_length(length, bucket, max_length) - length

  def pad(tensor):
    return tf.pad(tf.convert_to_tensor(tensor, tf.int32), [[0, 0], [0, extra]])
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


def bucketed_batch_size(batch):
  """Batch sizes under XLA: the next power of two (a handful of compiled shapes per length)."""
  return 1 << max(int(batch) - 1, 0).bit_length()


def pad_batch_to_bucket(ids, mask, types, features, real_first_token=False):
  """Pads the batch of int32 [B, T] text inputs and float32 [B, 64, D] features with zero rows to
  `bucketed_batch_size(B)` (XLA scoring); the caller drops the padding rows' scores.

  real_first_token: padding rows get mask 1 at position 0 (a signature that refuses rows without a
  real token accepts them).
  """
  extra = bucketed_batch_size(int(ids.shape[0])) - int(ids.shape[0])
  if not extra:
    return ids, mask, types, features
  ids, mask, types = (tf.pad(t, [[0, extra], [0, 0]]) for t in (ids, mask, types))
  if real_first_token:
    mask = tf.concat([mask[:, :1] * 0 + 1, mask[:, 1:]], axis=1)
  return ids, mask, types, tf.pad(features, [[0, extra], [0, 0], [0, 0]])


class KerasPairScorer(PairScorer):
  """Scores with a `FashionBertModel` through `tf.function`s with relaxed shapes (no retracing).

  With `jit_compile` the scoring function is compiled by XLA; XLA compiles once per input shape,
  so texts are padded to multiples of `length_bucket` positions and batches to a power of two
  (padding rows are zeros, their scores dropped). The model may be any of
  `inference_precision.inference_model` (a Keras copy, or the fused bfloat16 graph
  `fused_inference.FusedScoringModel`: same call and `compute_patch_features`).
  """

  def __init__(self, model, feature_dim, jit_compile=False, length_bucket=0,
               max_text_length=contract.MAX_TEXT_LENGTH):
    self.model = model
    self.feature_dim = int(feature_dim)
    self.jit_compile = bool(jit_compile)
    self.length_bucket = int(length_bucket)
    self.max_text_length = int(max_text_length)
    self._score = tf.function(
        lambda ids, mask, types, features: model_match_probability(
            model, ids, mask, types, features),
        input_signature=text_signature() + [features_signature(self.feature_dim)],
        jit_compile=self.jit_compile)
    self._features = tf.function(model.compute_patch_features,
                                 input_signature=[image_signature()])

  def patch_features(self, image):
    return self._features(tf.convert_to_tensor(image, tf.uint8))

  def match_probability(self, input_word_ids, input_mask, input_type_ids, patch_features):
    ids, mask, types = (tf.convert_to_tensor(t, tf.int32)
                        for t in (input_word_ids, input_mask, input_type_ids))
    features = tf.convert_to_tensor(patch_features, tf.float32)
    batch = int(ids.shape[0])
    if self.length_bucket > 0:
      ids, mask, types = pad_to_length_bucket(ids, mask, types, self.length_bucket,
                                              self.max_text_length)
    if self.jit_compile:
      ids, mask, types, features = pad_batch_to_bucket(ids, mask, types, features)
    return self._score(ids, mask, types, features).numpy()[:batch]


class SavedModelPairScorer(PairScorer):
  """Scores with an exported SavedModel (`score_features` + `compute_patch_features`)."""

  def __init__(self, export_path):
    import tensorflow_text  # pylint: disable=g-import-not-at-top,unused-import  (registers ops)
    self.export_path = export_path
    self.loaded = tf.saved_model.load(export_path)
    self._score = self.loaded.signatures["score_features"]
    spec = self._score.structured_input_signature[1][contract.FEATURES_KEY]
    self.feature_dim = int(spec.shape[-1])
    # An XLA export (`fashionbert export --jit_compile`) pads texts to its length buckets itself;
    # batches are padded here to a power of two so that it compiles a few batch sizes only.
    settings_file = os.path.join(export_path, "assets.extra", "fashionbert_inference.json")
    self.jit_compile = False
    if tf.io.gfile.exists(settings_file):
      with tf.io.gfile.GFile(settings_file) as f:
        self.jit_compile = bool(json.load(f).get("jit_compile", False))

  def patch_features(self, image):
    return self.loaded.compute_patch_features(tf.convert_to_tensor(image, tf.uint8))

  def match_probability(self, input_word_ids, input_mask, input_type_ids, patch_features):
    ids, mask, types = (tf.convert_to_tensor(t, tf.int32)
                        for t in (input_word_ids, input_mask, input_type_ids))
    features = tf.convert_to_tensor(patch_features, tf.float32)
    batch = int(ids.shape[0])
    if self.jit_compile:
      ids, mask, types, features = pad_batch_to_bucket(ids, mask, types, features,
                                                       real_first_token=True)
    outputs = self._score(input_word_ids=ids, input_mask=mask, input_type_ids=types,
                          patch_features=features)
    return outputs["match_probability"].numpy()[:batch]
