"""The batch contract: what the tf.data pipeline hands the FashionBERT model.

This module is the one place that states it. The pipeline (`fashionbert_tf.data.pipeline`) produces
dicts with exactly these keys, the model (`fashionbert_tf.modeling`) consumes them, and the
evaluation and serving code builds the same dicts for scoring.

Shapes, with B = batch size, T = the batch's own longest text (<= `MAX_TEXT_LENGTH`, padded to it,
not to 448), P = masked-LM slots (`data.max_predictions_per_seq`, fixed), M = masked-patch slots
(ceil(64 * `data.patch_mask_rate`) = 7, fixed), D = patch feature size (2048 in the paper):

  input_word_ids         int32   [B, T]   `[CLS] text [SEP]` WordPiece ids, 0-padded; masked
                                          positions hold the replacement id (80% [MASK], 10% random,
                                          10% unchanged).
  input_mask             int32   [B, T]   1 for real text tokens, 0 for padding.
  input_type_ids         int32   [B, T]   segment ids of the text; all 0 ("T"). The model gives the
                                          64 patches segment 1 ("I") itself.
  masked_lm_positions    int32   [B, P]   indices into the text of the masked WordPieces, 0-padded.
  masked_lm_ids          int32   [B, P]   the original ids at those positions, 0-padded.
  masked_lm_weights      float32 [B, P]   1.0 for a real masked position, 0.0 for padding.
  image                  uint8   [B, 256, 256, 3]   the product image (online-feature mode), or
  patch_features         float32 [B, 64, D]         features precomputed by tools/ (feature mode).
  masked_patch_positions int32   [B, M]   indices (0..63, row-major over the 8x8 grid) of masked
                                          patches, 0-padded. The model zeroes their features.
  masked_patch_weights   float32 [B, M]   1.0 for a real masked patch, 0.0 for padding.
  tia_label              int32   [B]      1 = text and image come from the same product, 0 = not.

The model sees the sequence `[CLS] text [SEP] p_1 ... p_64` (at most 448 + 64 = 512 positions).
"""

import tensorflow as tf

from fashionbert_tf.configs import sequence_layout

# Paper, section 3.1: 512 positions = 448 text (special tokens included) + 64 patches (8x8 grid).
MAX_SEQUENCE_LENGTH = sequence_layout.MAX_SEQUENCE_LENGTH
GRID_SIZE = sequence_layout.GRID_SIZE
NUM_PATCHES = sequence_layout.NUM_PATCHES
MAX_TEXT_LENGTH = sequence_layout.MAX_TEXT_LENGTH
IMAGE_SIZE = sequence_layout.IMAGE_SIZE
PAPER_FEATURE_DIM = sequence_layout.PAPER_FEATURE_DIM

TEXT_KEYS = ("input_word_ids", "input_mask", "input_type_ids")
MLM_KEYS = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")
MPM_KEYS = ("masked_patch_positions", "masked_patch_weights")
IMAGE_KEY = "image"
FEATURES_KEY = "patch_features"
LABEL_KEY = "tia_label"


def batch_signature(feature_dim=None, image_mode=True):
  """`tf.TensorSpec`s of one batch, keyed by name (batch, text and slot dims left as None).

  Args:
    feature_dim: D for `patch_features`; only used when `image_mode` is False.
    image_mode: True when the batch carries `image`, False when it carries `patch_features`.
  """
  spec = {
      "input_word_ids": tf.TensorSpec([None, None], tf.int32),
      "input_mask": tf.TensorSpec([None, None], tf.int32),
      "input_type_ids": tf.TensorSpec([None, None], tf.int32),
      "masked_lm_positions": tf.TensorSpec([None, None], tf.int32),
      "masked_lm_ids": tf.TensorSpec([None, None], tf.int32),
      "masked_lm_weights": tf.TensorSpec([None, None], tf.float32),
      "masked_patch_positions": tf.TensorSpec([None, None], tf.int32),
      "masked_patch_weights": tf.TensorSpec([None, None], tf.float32),
      LABEL_KEY: tf.TensorSpec([None], tf.int32),
  }
  if image_mode:
    spec[IMAGE_KEY] = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8)
  else:
    spec[FEATURES_KEY] = tf.TensorSpec([None, NUM_PATCHES, feature_dim], tf.float32)
  return spec


def checked_images(images):
  """`images` as a uint8 tensor [B, 256, 256, 3] (the batch's `image`), or a clear error.

  Raises:
    TypeError: not uint8.
    ValueError: a static shape other than [B, 256, 256, 3].
  """
  images = tf.convert_to_tensor(images)
  if images.dtype != tf.uint8:
    raise TypeError(f"patch features: `image` must be uint8 [B, 256, 256, 3], got {images.dtype}")
  expected = [IMAGE_SIZE, IMAGE_SIZE, 3]
  if images.shape.rank is not None and (
      images.shape.rank != 4 or not images.shape[1:].is_compatible_with(expected)):
    raise ValueError(
        f"patch features: `image` must have shape [B, {IMAGE_SIZE}, {IMAGE_SIZE}, 3], got "
        f"{images.shape}")
  return images
