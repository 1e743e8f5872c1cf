"""The click model of search fine-tuning (paper 3.4, Figure 6, Table 4): three variants.

`SearchModel(inputs)` with inputs (layout: `search/layout.py`):
  input_word_ids, input_mask, input_type_ids  int32 [B, T]   `[CLS] query [SEP] title [SEP]`
  patch_features  float32 [B, 64, D]  (image variants; precomputed) or
  image           uint8 [B, 256, 256, 3] (image variants; the backbone runs)
returns a dict:
  click_logits   float32 [B, 2]   class 1 = clicked; P(click | q, t, i) = softmax(.)[:, 1]
  pooled_output  float32 [B, H]   tanh(dense([CLS])): the text-side (bert_img) or joint
                                  (fashionbert, oribert) representation the click head reads.

Variants (`model.search_variant`):
  fashionbert  `[CLS] q [SEP] t [SEP] p_1..p_64` through one encoder (text and patches attend to
               each other in every layer); click head on the pooled [CLS] (Figure 6).
  oribert      `[CLS] q [SEP] t [SEP]` only; click head on the pooled [CLS].
  bert_img     the text encoder over `[CLS] q [SEP] t [SEP]` alone; the 64 patch features are
               pooled (`search.image_pooling`: mean or max over patches, after the patch-feature
               standardization), projected to H with a tanh Dense (like BERT's pooler), and
               concatenated with the pooled [CLS]: the click head reads [B, 2H]. No cross-attention
               (the paper: image features "concatenated with the BERT outputs of the final layer").
The click head is one Dense(2) (float32), like the TIA head.

Image dropout (`image_dropout_rate`, `search.image_dropout_rate`; training only, not in the paper):
each training impression's image is hidden with this probability: FashionBERT masks its 64
patches out of attention (`dense_mask` row of zeros: the impression is `[CLS] q [SEP] t [SEP]`
alone), BERT+IMG zeroes the projected image half of the head input [B, H:2H].
"""

import tensorflow as tf
import tf_keras

from fashionbert_tf.data import contract


def _float32(tensor):
  return tf.cast(tensor, tf.float32)


class SearchModel(tf_keras.Model):
  """Click prediction on <query, title, image>; build with `search.model_builder`."""

  def __init__(self, variant, encoder, click_head, patch_embedding=None,
               patch_feature_normalization=None, patch_feature_extractor=None,
               image_projection=None, image_pooling="mean", image_dropout_rate=0.0, **kwargs):
    """Args:
      variant: "fashionbert" | "oribert" | "bert_img".
      encoder: `encoder.FashionBertEncoder` (3 segment rows for fashionbert, 2 otherwise).
      click_head: Dense(2) layer on [B, H] (or [B, 2H] for bert_img).
      patch_embedding: `patch_embedding.PatchEmbedding` (fashionbert).
      patch_feature_normalization: the pretraining run's standardization layer (image variants).
      patch_feature_extractor: the backbone (image variants; used when `image` is given).
      image_projection: Dense(H, tanh) on the pooled patch features (bert_img).
      image_pooling: "mean" | "max" over the 64 patches (bert_img).
      image_dropout_rate: probability that a training impression's image is hidden (module
        docstring); 0 = never.
    """
    super().__init__(**kwargs)
    self.variant = variant
    self.encoder = encoder
    self.click_head = click_head
    self.patch_embedding = patch_embedding
    self.patch_feature_normalization = patch_feature_normalization
    self.patch_feature_extractor = patch_feature_extractor
    self.image_projection = image_projection
    self.image_pooling = image_pooling
    self.image_dropout_rate = float(image_dropout_rate)

  @property
  def uses_image(self):
    return self.variant in ("fashionbert", "bert_img")

  @property
  def new_layer_variables(self):
    """Variables that start untrained for clicks: the click head and (bert_img) the image
    projection (`train.new_layers_learning_rate_multiplier` applies to them)."""
    variables = list(self.click_head.trainable_variables)
    if self.image_projection is not None:
      variables += self.image_projection.trainable_variables
    return variables

  def patch_features(self, inputs, training=None):
    """float32 [B, 64, D]: the given `patch_features` or the backbone over `image`, standardized."""
    if contract.FEATURES_KEY in inputs:
      features = _float32(inputs[contract.FEATURES_KEY])
    elif contract.IMAGE_KEY in inputs:
      features = _float32(self.patch_feature_extractor(inputs[contract.IMAGE_KEY],
                                                       training=training))
    else:
      raise ValueError(f"search variant {self.variant!r} needs `{contract.FEATURES_KEY}` or "
                       f"`{contract.IMAGE_KEY}`; got keys {sorted(inputs)}")
    if self.patch_feature_normalization is not None:
      features = self.patch_feature_normalization(features)
    return features

  def image_shown(self, batch_size, training):
    """int32 [B, 1]: 1 where the impression's image is shown, 0 where image dropout hides it; None
    when every image is shown (inference, image_dropout_rate 0 or a text-only variant), so the
    inference graph has no dropout ops."""
    if not (training and self.uses_image and self.image_dropout_rate > 0.0):
      return None
    return tf.cast(tf.random.uniform([batch_size, 1]) >= self.image_dropout_rate, tf.int32)

  def call(self, inputs, training=None):
    batch_size = tf.shape(inputs["input_word_ids"])[0]
    shown = self.image_shown(batch_size, training)                           # [B, 1] or None
    text = dict(input_word_ids=inputs["input_word_ids"], input_mask=inputs["input_mask"],
                input_type_ids=inputs["input_type_ids"])
    if self.variant == "fashionbert":
      patches = self.patch_embedding(self.patch_features(inputs, training=training))  # [B, 64, E]
      text.update(dense_inputs=patches,
                  dense_mask=(tf.ones([batch_size, contract.NUM_PATCHES], tf.int32)
                              if shown is None else
                              tf.tile(shown, [1, contract.NUM_PATCHES])))          # [B, 64]
    outputs = self.encoder(text, training=training)
    pooled = _float32(outputs["pooled_output"])   # [B, H] tanh(dense([CLS]))
    head_input = pooled
    if self.variant == "bert_img":
      features = self.patch_features(inputs, training=training)    # [B, 64, D]
      if self.image_pooling == "max":
        image = tf.reduce_max(features, axis=1)
      else:
        image = tf.reduce_mean(features, axis=1)
      projected = _float32(self.image_projection(image))                    # [B, H]
      if shown is not None:
        projected *= _float32(shown)
      head_input = tf.concat([pooled, projected], axis=-1)                  # [B, 2H]
    return {"click_logits": _float32(self.click_head(head_input)), "pooled_output": pooled}


def click_probability(outputs):
  """P(click) float32 [B] from the model's output dict."""
  return tf.nn.softmax(outputs["click_logits"], axis=-1)[:, 1]
