"""Patch embeddings: the image patches as tokens for the BERT encoder.

Paper section 2.2 ("Image Representation"): "The spatial positions of the patches are used in the
position embedding. The sum of the patch features, the position embedding and segmentation embedding
are regarded as patch representations." The patch features (D = 2048 in the paper) are wider than
the encoder, so they are first projected to the encoder's embedding width E (a learned Dense layer;
the paper leaves the projection implicit).

Patch representation of patch k (0..63, row-major over the 8x8 grid):
  Dense(feature_k) + patch_position_embeddings[k] + type_embeddings[1]
- `patch_position_embeddings` is the patch layer's own [64, E] table, not the text position table,
  so a patch's embedding never depends on how long the text is.
- the segment embedding is row 1 ("I") of the encoder's type embedding table (text uses row 0, "T"),
  shared with the encoder, so a checkpoint's type embeddings apply to both.
LayerNorm and dropout are applied afterwards, by the encoder, to the concatenated [text; patch]
embeddings (see `encoder.py`), as BERT does after summing its embeddings.

The authors' released model lays the patches out differently (no projection bias, a patch type
table and a LayerNorm of their own): `model.patch_embedding: easytransfer`,
`easytransfer_embedding.py`, which says why both exist.

Masked patch modeling (paper 2.2, MPM): "The patch features of masked-out patches are set to zero",
done by `zero_masked_patches` before the projection.
"""

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils

from fashionbert_tf.data import contract

IMAGE_SEGMENT_ID = 1  # Paper Figure 2: segment "I"; text is segment 0, "T".


def masked_patch_indicator(masked_patch_positions, masked_patch_weights,
                           num_patches=contract.NUM_PATCHES):
  """Which patches are masked: float32 [B, num_patches], 1.0 where masked.

  Args:
    masked_patch_positions: int32 [B, M], patch indices 0..63 (0-padded).
    masked_patch_weights: float32 [B, M]; a slot counts only when its weight is > 0 (padding slots
      have weight 0 and mask nothing, even though their position is 0).
  """
  slots = tf.one_hot(masked_patch_positions, num_patches, dtype=tf.float32)  # [B, M, 64]
  real = tf.cast(tf.convert_to_tensor(masked_patch_weights) > 0, tf.float32)[:, :, tf.newaxis]
  return tf.minimum(tf.reduce_sum(slots * real, axis=1), 1.0)


def zero_masked_patches(patch_features, masked_patch_positions, masked_patch_weights):
  """Sets the features of masked patches to zero (paper 2.2, MPM).

  Args:
    patch_features: float [B, 64, D].
    masked_patch_positions: int32 [B, M].
    masked_patch_weights: float32 [B, M] (> 0 = a real masked patch).
  Returns:
    float [B, 64, D], same dtype as `patch_features`, masked rows all zero.
  """
  masked = masked_patch_indicator(masked_patch_positions, masked_patch_weights,
                                  num_patches=patch_features.shape[1] or contract.NUM_PATCHES)
  keep = tf.cast(1.0 - masked, patch_features.dtype)[:, :, tf.newaxis]
  return patch_features * keep


class PatchEmbedding(tf_keras.layers.Layer):
  """Maps patch features [B, 64, D] -> patch embeddings [B, 64, E] (before LayerNorm / dropout).

  embedding = Dense_E(features) + patch_position_embeddings[k] + type_embeddings[1].
  """

  def __init__(self,
               embedding_width,
               type_embedding_layer,
               num_patches=contract.NUM_PATCHES,
               initializer=None,
               **kwargs):
    """Args:
      embedding_width: E, the encoder's word-embedding width.
      type_embedding_layer: the encoder's segment embedding layer (ids -> [.., E]); shared.
      num_patches: 64 (8x8 grid).
      initializer: for the projection kernel and the position table (default: BERT's truncated
        normal, stddev 0.02).
    """
    super().__init__(**kwargs)
    if initializer is None:
      initializer = tf_keras.initializers.TruncatedNormal(stddev=0.02)
    self._initializer = tf_keras.initializers.get(initializer)
    self.embedding_width = int(embedding_width)
    self.num_patches = int(num_patches)
    self.type_embedding_layer = type_embedding_layer
    self.projection = tf_keras.layers.Dense(
        self.embedding_width,
        kernel_initializer=tf_utils.clone_initializer(self._initializer),
        name="projection")

  def build(self, input_shape):
    self.patch_position_embeddings = self.add_weight(
        "patch_position_embeddings",
        shape=[self.num_patches, self.embedding_width],
        initializer=tf_utils.clone_initializer(self._initializer),
        trainable=True)
    super().build(input_shape)

  def call(self, patch_features):
    """patch_features float [B, 64, D] -> embeddings [B, 64, E] in the layer's compute dtype."""
    projected = self.projection(patch_features)
    segment_ids = tf.fill([1, self.num_patches], IMAGE_SEGMENT_ID)
    segment = tf.cast(self.type_embedding_layer(segment_ids), projected.dtype)  # [1, 64, E]
    position = tf.cast(self.patch_position_embeddings, projected.dtype)[tf.newaxis]  # [1, 64, E]
    return projected + position + segment
