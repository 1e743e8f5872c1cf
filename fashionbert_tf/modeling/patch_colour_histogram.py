"""Per-patch colour histograms, appended to the CNN's patch features (`model.patch_colour_histogram_bins`).

NOT in the paper (section 2.2 uses the CNN's patch features alone); off by default. ImageNet CNNs
are trained to ignore colour (colour jitter, AutoAugment's colour operations), and their last layer
keeps little of it: `tools/probe_feature_attributes.py` measures how much. A colour histogram per
patch (Swain and Ballard, 1991) puts the colours next to the CNN's feature. Whether the model then
aligns colour words with them is a matter of training signal, not only of features. On the toy
data, at scale 1 the encoder did not read colour from them (`tools/probe_masked_colour.py`); at
scale 16 it did, but TIA left chance ~240 steps later than without them, and the matcher learned
colour only slowly (docs/experiments/paper_recipe_demo.md).

For k bins per channel, each patch's histogram has k^3 joint RGB bins: pixel (r, g, b) falls in
bin (floor(r k / 256) * k + floor(g k / 256)) * k + floor(b k / 256); the histogram value is the
fraction of the patch's 32x32 pixels in the bin (so it sums to 1), times
`model.patch_colour_histogram_scale`. The patch order is `patch_features.cut_into_patches`'s.

The scale: next to EfficientNet-Lite0's 1,280 values (a patch vector of L2 norm ~19 on the toy
images), 64 fractions of norm <= 1 are ~5% of what the patch projection sees at initialization;
a scale of ~16-20 gives the two blocks similar norms.

Shapes: images uint8 [B, 256, 256, 3] -> histograms float32 [B, 64, k^3]; the patch feature the
model reads is then [CNN feature (D_cnn), histogram (k^3)], D = D_cnn + k^3 = `model.feature_dim`.
"""

import tensorflow as tf

from fashionbert_tf.data import contract

MAX_BINS_PER_CHANNEL = 16


def histogram_dim(bins_per_channel):
  """k^3, the size of one patch's histogram (0 when `bins_per_channel` is 0: no histogram)."""
  bins = check_bins(bins_per_channel)
  return bins ** 3


def check_bins(bins_per_channel):
  """`bins_per_channel` as an int in {0} U [2, 16], or a ValueError naming the setting."""
  bins = int(bins_per_channel)
  if bins != 0 and not 2 <= bins <= MAX_BINS_PER_CHANNEL:
    raise ValueError(f"model.patch_colour_histogram_bins = {bins_per_channel}; expected 0 (none) "
                     f"or a number of bins per colour channel in [2, {MAX_BINS_PER_CHANNEL}]")
  return bins


def patch_colour_histograms(images, bins_per_channel):
  """uint8 images [B, 256, 256, 3] -> float32 [B, 64, k^3]: each patch's joint RGB histogram.

  Args:
    images: uint8 [B, 256, 256, 3].
    bins_per_channel: k >= 2.

  Returns:
    float32 [B, 64, k^3]; row b, patch p sums to 1 (fractions of the patch's pixels per bin).
  """
  bins = check_bins(bins_per_channel)
  if bins < 2:
    raise ValueError("patch_colour_histograms needs bins_per_channel >= 2")
  images = contract.checked_images(images)
  size = contract.IMAGE_SIZE // contract.GRID_SIZE
  batch = tf.shape(images)[0]
  channel_bin = tf.cast(images, tf.int32) * bins // 256                     # [B, 256, 256, 3]
  joint_bin = (channel_bin[..., 0] * bins + channel_bin[..., 1]) * bins + channel_bin[..., 2]
  # [B, row, y, col, x] -> [B, row, col, y, x] -> [B * 64, 32 * 32], row-major over the 8x8 grid.
  grid = tf.reshape(joint_bin, [batch, contract.GRID_SIZE, size, contract.GRID_SIZE, size])
  per_patch = tf.reshape(tf.transpose(grid, [0, 1, 3, 2, 4]), [-1, size * size])
  counts = tf.math.bincount(per_patch, minlength=bins ** 3, maxlength=bins ** 3, axis=-1,
                            dtype=tf.float32)                               # [B * 64, k^3]
  fractions = counts / float(size * size)
  return tf.reshape(fractions, [batch, contract.NUM_PATCHES, bins ** 3])


def check_scale(scale):
  """`scale` as a positive finite float, or a ValueError naming the setting."""
  value = float(scale)
  if not 0.0 < value < float("inf"):
    raise ValueError(f"model.patch_colour_histogram_scale = {scale}; expected a positive number")
  return value


class PatchColourHistogram:
  """The checked histogram settings of a patch-feature extractor; appends the block to features.

  `dim` is k^3 (0 when k is 0: `append_to` then returns the features unchanged).
  """

  def __init__(self, bins_per_channel=0, scale=1.0):
    self.bins_per_channel = check_bins(bins_per_channel)
    self.scale = check_scale(scale)
    self.dim = self.bins_per_channel ** 3

  def append_to(self, features, images):
    """CNN features float32 [B, 64, D_cnn] -> [B, 64, D_cnn + k^3]: each patch's histogram of
    `images` (uint8 [B, 256, 256, 3]) times the scale, appended."""
    if not self.bins_per_channel:
      return features
    histograms = patch_colour_histograms(images, self.bins_per_channel) * self.scale
    return tf.concat([features, histograms], -1)
