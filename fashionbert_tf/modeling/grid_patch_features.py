"""Grid-mode patch features: one backbone pass over the whole image, its feature map cut 8x8.

`model.patch_feature_mode: grid`. The paper (section 2.2) runs each of the 64 patches through the
patch network on its own (`patch_features.PatchFeatureExtractor`, "patches" mode). A fully
convolutional CNN of total stride 32 can instead run once over the 256x256 image: its feature map
is then 8x8, one cell per 32x32 patch, cell k = patch k in the same row-major order. Each cell's
feature sees its patch and, through the receptive field, the pixels around it; the per-patch mode
sees the patch alone with zero padding at its borders. The two agree in what they describe (both
measured in docs/experiments/efficientnet_patch_features.md) and grid mode costs one image's worth
of compute instead of 64 small ones.

Per image: uint8 [256, 256, 3] -> float32 -> normalization (`model.image_normalization`) ->
bilinear resize to 8S x 8S when S = `model.patch_input_size` is not 32 (each patch is then S x S
pixels, as in "patches" mode) -> backbone feature map [8S/32, 8S/32, D] -> average pool of each
(S/32) x (S/32) window -> [8, 8, D] -> [64, D].
"""

import tensorflow as tf
import tf_keras

from fashionbert_tf.data import contract
from fashionbert_tf.modeling import backbones
from fashionbert_tf.modeling import patch_colour_histogram
from fashionbert_tf.modeling import pixel_normalization


class GridFeatureExtractor(tf_keras.layers.Layer):
  """Maps images uint8 [B, 256, 256, 3] -> patch features float32 [B, 64, D], one pass per image.

  Freezing follows `PatchFeatureExtractor`: not trainable (the default) runs the backbone in
  inference mode with no gradient to its variables; trainable passes `training` on.
  """

  def __init__(self, backbone, input_size, grid_stride, normalization, trainable=False,
               colour_histogram_bins=0, colour_histogram_scale=1.0, **kwargs):
    """Args:
      backbone: a `tf_keras.Model` float32 [N, 8S, 8S, 3] -> feature map [N, 8S/g, 8S/g, D].
      input_size: S, the side of one patch after the resize (a multiple of `grid_stride`).
      grid_stride: g, the backbone's total downsampling (32).
      normalization: pixel scaling name, see `pixel_normalization.normalize_pixels`.
      trainable: whether the backbone is fine-tuned.
      colour_histogram_bins: k > 0 appends each patch's k^3-bin colour histogram
        (`patch_colour_histogram`): D = D_cnn + k^3.
      colour_histogram_scale: the factor on the histogram's fractions.
    """
    super().__init__(trainable=trainable, **kwargs)
    if normalization not in pixel_normalization.NORMALIZATIONS:
      pixel_normalization.normalize_pixels(tf.zeros([3]), normalization)  # Raises the naming error.
    if input_size % grid_stride:
      raise ValueError(f"grid patch features: patch side {input_size} is not a multiple of the "
                       f"backbone stride {grid_stride}")
    self.backbone = backbone
    self.input_size = int(input_size)
    self.image_size = contract.GRID_SIZE * self.input_size
    self.cells_per_patch = self.input_size // grid_stride
    self.normalization = normalization
    self.colour_histogram = patch_colour_histogram.PatchColourHistogram(colour_histogram_bins,
                                                                        colour_histogram_scale)
    self.feature_dim = int(backbone.output_shape[-1]) + self.colour_histogram.dim
    expected_map = contract.GRID_SIZE * self.cells_per_patch
    if tuple(backbone.output_shape[1:3]) != (expected_map, expected_map):
      raise ValueError(f"grid patch features: the backbone maps {self.image_size}x"
                       f"{self.image_size} images to a {backbone.output_shape[1:3]} feature map; "
                       f"expected {expected_map}x{expected_map}")

  def preprocess(self, images):
    """uint8 [B, 256, 256, 3] -> the backbone's input float32 [B, 8S, 8S, 3]."""
    images = contract.checked_images(images)
    pixels = pixel_normalization.normalize_pixels(tf.cast(images, tf.float32), self.normalization)
    if self.image_size != contract.IMAGE_SIZE:
      pixels = tf.image.resize(pixels, [self.image_size, self.image_size], method="bilinear")
    return pixels

  def call(self, images, training=None):
    batch = tf.shape(images)[0]
    backbone_training = training if self.trainable else False
    feature_map = self.backbone(self.preprocess(images), training=backbone_training)
    feature_map = tf.cast(feature_map, tf.float32)
    if self.cells_per_patch > 1:
      feature_map = tf.nn.avg_pool2d(feature_map, self.cells_per_patch, self.cells_per_patch,
                                     padding="VALID")
    # [B, 8, 8, D] -> [B, 64, D]: row-major, cell (r, c) -> patch 8r + c (`cut_into_patches`).
    features = tf.reshape(feature_map, [batch, contract.NUM_PATCHES, feature_map.shape[-1]])
    return self.colour_histogram.append_to(features, images)

  def compute_output_shape(self, input_shape):
    return tf.TensorShape([input_shape[0], contract.NUM_PATCHES, self.feature_dim])


def build_grid_feature_extractor(model_config, load_weights=True):
  """Builds the `GridFeatureExtractor` that `model_config` describes (`patch_feature_mode: grid`)."""
  backbones.resolve_patch_feature_mode(model_config)  # Checks the backbone and the size.
  backbone = backbones.build_backbone(model_config, load_weights=load_weights, feature_map=True)
  return GridFeatureExtractor(
      backbone,
      input_size=backbones.resolve_input_size(model_config),
      grid_stride=backbones.backbone_spec(model_config.backbone).grid_stride,
      normalization=backbones.resolve_normalization(model_config),
      trainable=model_config.backbone_trainable,
      colour_histogram_bins=model_config.patch_colour_histogram_bins,
      colour_histogram_scale=model_config.patch_colour_histogram_scale,
      name="patch_feature_extractor")
