"""Per-patch colour histograms appended to the CNN's patch features (model.patch_colour_histogram_bins)."""

import numpy as np
import pytest

from fashionbert_tf.configs.model import ModelConfig
from fashionbert_tf.modeling import backbones
from fashionbert_tf.modeling import patch_colour_histogram
from fashionbert_tf.modeling import patch_features


def numpy_histograms(images, bins):
  """Reference: [B, 64, bins^3] fractions, patch k = row k // 8, column k % 8."""
  out = np.zeros((images.shape[0], 64, bins ** 3))
  for b, image in enumerate(images):
    for k in range(64):
      row, col = divmod(k, 8)
      crop = image[32 * row:32 * row + 32, 32 * col:32 * col + 32].reshape(-1, 3).astype(int)
      level = crop * bins // 256
      joint = (level[:, 0] * bins + level[:, 1]) * bins + level[:, 2]
      out[b, k] = np.bincount(joint, minlength=bins ** 3) / len(joint)
  return out


@pytest.mark.parametrize("bins", [2, 4, 5])
def test_histograms_match_a_per_pixel_count(bins):
  images = np.random.default_rng(bins).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
  got = patch_colour_histogram.patch_colour_histograms(images, bins).numpy()
  assert got.shape == (2, 64, bins ** 3) and got.dtype == np.float32
  np.testing.assert_allclose(got, numpy_histograms(images, bins), atol=1e-6)
  np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_a_two_colour_patch_puts_half_in_each_colour_bin_at_its_grid_position():
  images = np.full((1, 256, 256, 3), 240, np.uint8)            # near-white background
  # Patch 21 = row 2, column 5: top half red (200, 30, 35), bottom half navy (20, 35, 90).
  images[0, 64:80, 160:192] = (200, 30, 35)
  images[0, 80:96, 160:192] = (20, 35, 90)
  got = patch_colour_histogram.patch_colour_histograms(images, 4).numpy()[0]
  red, navy, white = (3 * 4 + 0) * 4 + 0, (0 * 4 + 0) * 4 + 1, 63
  assert got[21, red] == pytest.approx(0.5) and got[21, navy] == pytest.approx(0.5)
  assert got[20, white] == pytest.approx(1.0) and got[22, white] == pytest.approx(1.0)
  assert np.count_nonzero(got[21]) == 2


@pytest.mark.parametrize("mode", ["patches", "grid"])
def test_extractor_appends_the_scaled_histograms_after_the_cnn_features(mode):
  bins, scale = 2, 16.0
  if mode == "patches":
    base = dict(backbone="linear", patch_feature_mode="patches")
    cnn_dim = 8
  else:
    base = dict(backbone="efficientnet_lite0", patch_feature_mode="grid", patch_input_size=32)
    cnn_dim = 1280
  images = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
  plain = patch_features.build_patch_feature_extractor(
      ModelConfig(feature_dim=cnn_dim, **base), load_weights=False)
  with_histogram = patch_features.build_patch_feature_extractor(
      ModelConfig(feature_dim=cnn_dim + bins ** 3, patch_colour_histogram_bins=bins,
                  patch_colour_histogram_scale=scale, **base),
      load_weights=False)
  assert with_histogram.feature_dim == cnn_dim + bins ** 3
  features = with_histogram(images).numpy()
  assert features.shape == (2, 64, cnn_dim + bins ** 3)
  # Same seed, same backbone: the first D_cnn columns are the plain extractor's features.
  np.testing.assert_allclose(features[..., :cnn_dim], plain(images).numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(features[..., cnn_dim:], scale * numpy_histograms(images, bins),
                             atol=1e-5)


def test_feature_dim_must_count_the_histogram():
  config = ModelConfig(backbone="linear", feature_dim=8, patch_colour_histogram_bins=4)
  assert backbones.backbone_feature_dim(config) == 8 - 64
  config = ModelConfig(backbone="efficientnet_lite0", feature_dim=1280,
                       patch_colour_histogram_bins=4)
  with pytest.raises(ValueError, match=r"1280-d features plus the 64-d colour histogram.*"
                                       r"set model\.feature_dim=1344"):
    backbones.build_backbone(config, load_weights=False)


@pytest.mark.parametrize("bins", [1, 17, -2])
def test_bins_out_of_range_are_named(bins):
  with pytest.raises(ValueError, match="model.patch_colour_histogram_bins"):
    patch_features.build_patch_feature_extractor(
        ModelConfig(backbone="linear", feature_dim=8, patch_colour_histogram_bins=bins),
        load_weights=False)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_a_non_positive_or_non_finite_scale_is_named(scale):
  with pytest.raises(ValueError, match="model.patch_colour_histogram_scale"):
    patch_features.build_patch_feature_extractor(
        ModelConfig(backbone="linear", feature_dim=16, patch_colour_histogram_bins=2,
                    patch_colour_histogram_scale=scale), load_weights=False)
