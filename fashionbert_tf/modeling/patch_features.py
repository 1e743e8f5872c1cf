"""Patch features: cut the image into the 8x8 grid of 32x32 patches, run each through the backbone.

Paper section 2.2 ("Image Representation"): each image is cut into patches with the same pixels; the
outputs of the patch network are the patch features. Section 3.1: 64 patches (8x8) of a 256x256
image, ResNeXt-101 features of 2048 dims.

Patch k (0..63) is the crop at grid row k // 8 and column k % 8 (row-major), i.e. pixels
`image[32*(k//8) : 32*(k//8)+32, 32*(k%8) : 32*(k%8)+32, :]`. The projection to the encoder width,
the position embedding of k and the segment embedding are the model's (`patch_embedding.py`).

Per patch: uint8 pixels -> float32 -> normalization (`model.image_normalization`) -> bilinear
resize to `model.patch_input_size` when it is not 32 -> backbone -> float32 [D].
That is `model.patch_feature_mode` "patches"; "grid" (one backbone pass over the whole image) is
`grid_patch_features.py`, chosen by `build_patch_feature_extractor`.
"""

import tensorflow as tf
import tf_keras

from fashionbert_tf.data import contract
from fashionbert_tf.modeling import backbones
from fashionbert_tf.modeling import grid_patch_features
from fashionbert_tf.modeling import patch_colour_histogram
from fashionbert_tf.modeling import pixel_normalization

PATCH_SIZE = contract.IMAGE_SIZE // contract.GRID_SIZE  # 32


def cut_into_patches(images):
  """Cuts images [B, 256, 256, C] into patches [B, 64, 32, 32, C], row-major over the 8x8 grid."""
  grid, size = contract.GRID_SIZE, PATCH_SIZE
  channels = images.shape[-1]
  batch = tf.shape(images)[0]
  # [B, row, y, col, x, C] -> [B, row, col, y, x, C] -> [B, row*8 + col, y, x, C].
  rows = tf.reshape(images, [batch, grid, size, grid, size, channels])
  patches = tf.transpose(rows, [0, 1, 3, 2, 4, 5])
  return tf.reshape(patches, [batch, grid * grid, size, size, channels])


class PatchFeatureExtractor(tf_keras.layers.Layer):
  """Maps images uint8 [B, 256, 256, 3] -> patch features float32 [B, 64, D].

  The backbone sees B*64 patches at once, float32 [B*64, S, S, 3] -> [B*64, D]. When the layer is
  not trainable (`model.backbone_trainable` false, the default) the backbone always runs in
  inference mode (BatchNorm uses its moving statistics and never updates them) and its variables
  receive no gradient. When trainable, the `training` argument is passed on.
  """

  def __init__(self, backbone, input_size, normalization, trainable=False,
               colour_histogram_bins=0, colour_histogram_scale=1.0, **kwargs):
    """Args:
      backbone: a `tf_keras.Model` mapping float32 [N, S, S, 3] -> [N, D_cnn].
      input_size: S; patches are bilinearly resized from 32 to S when S != 32.
      normalization: pixel scaling name, see `pixel_normalization.normalize_pixels`.
      trainable: whether the backbone is fine-tuned.
      colour_histogram_bins: k > 0 appends each patch's k^3-bin colour histogram
        (`patch_colour_histogram`): D = D_cnn + k^3.
      colour_histogram_scale: the factor on the histogram's fractions.
    """
    super().__init__(trainable=trainable, **kwargs)
    if normalization not in pixel_normalization.NORMALIZATIONS:
      pixel_normalization.normalize_pixels(tf.zeros([3]), normalization)  # Raises the naming error.
    self.backbone = backbone
    self.input_size = int(input_size)
    self.normalization = normalization
    self.colour_histogram = patch_colour_histogram.PatchColourHistogram(colour_histogram_bins,
                                                                        colour_histogram_scale)
    self.feature_dim = int(backbone.output_shape[-1]) + self.colour_histogram.dim

  def preprocess(self, images):
    """uint8 [B, 256, 256, 3] -> the backbone's input float32 [B*64, S, S, 3]."""
    images = contract.checked_images(images)
    patches = cut_into_patches(images)
    patches = tf.reshape(patches, [-1, PATCH_SIZE, PATCH_SIZE, 3])
    patches = pixel_normalization.normalize_pixels(tf.cast(patches, tf.float32), self.normalization)
    if self.input_size != PATCH_SIZE:
      patches = tf.image.resize(patches, [self.input_size, self.input_size], method="bilinear")
    return patches

  def call(self, images, training=None):
    batch = tf.shape(images)[0]
    patches = self.preprocess(images)
    backbone_training = training if self.trainable else False
    features = self.backbone(patches, training=backbone_training)
    features = tf.reshape(tf.cast(features, tf.float32), [batch, contract.NUM_PATCHES, -1])
    return self.colour_histogram.append_to(features, images)

  def compute_output_shape(self, input_shape):
    return tf.TensorShape([input_shape[0], contract.NUM_PATCHES, self.feature_dim])


def build_patch_feature_extractor(model_config, load_weights=True):
  """Builds the `PatchFeatureExtractor` that `model_config` describes.

  Reads `model.backbone`, `model.backbone_weights` (loaded unless `load_weights` is False),
  `model.backbone_trainable`, `model.feature_dim`, `model.patch_input_size`,
  `model.patch_feature_mode`, `model.image_normalization`, `model.patch_colour_histogram_bins`
  and the `model.resnext_*` shape knobs.

  Returns:
    A `tf_keras.layers.Layer`: uint8 [B, 256, 256, 3] -> float32 [B, 64, D]; a
    `PatchFeatureExtractor` ("patches" mode) or a `grid_patch_features.GridFeatureExtractor`.
  """
  if backbones.resolve_patch_feature_mode(model_config) == "grid":
    return grid_patch_features.build_grid_feature_extractor(model_config, load_weights)
  backbone = backbones.build_backbone(model_config, load_weights=load_weights)
  return PatchFeatureExtractor(
      backbone,
      input_size=backbones.resolve_input_size(model_config),
      normalization=backbones.resolve_normalization(model_config),
      trainable=model_config.backbone_trainable,
      colour_histogram_bins=model_config.patch_colour_histogram_bins,
      colour_histogram_scale=model_config.patch_colour_histogram_scale,
      name="patch_feature_extractor")


def inference_feature_fn(extractor):
  """A compiled uint8 [b, 256, 256, 3] -> float32 [b, 64, D] function, backbone in inference mode."""
  @tf.function(reduce_retracing=True)
  def compute(images):
    return extractor(images, training=False)
  return lambda images: compute(images).numpy()
