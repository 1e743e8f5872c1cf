"""EfficientNet-Lite0 patch features in both modes ("patches", "grid"): what each computes, and
precomputed features equal online ones. Uses the packaged ImageNet weights (the default)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.data import records
from fashionbert_tf.data.toy import fashion_gen
from fashionbert_tf.modeling import backbones
from fashionbert_tf.modeling import feature_precompute
from fashionbert_tf.modeling import feature_statistics
from fashionbert_tf.modeling import grid_patch_features
from fashionbert_tf.modeling import patch_features
from fashionbert_tf.modeling.backbones import efficientnet_lite
from fashionbert_tf.modeling.backbones import efficientnet_lite_weights
from fashionbert_tf.configs.model import ModelConfig
from test_backbone_precompute import write_shards


def lite_config(**overrides):
  return ModelConfig(backbone="efficientnet_lite0", feature_dim=1280, **overrides)


def toy_images(count=2, seed=0):
  rng = np.random.default_rng(seed)
  products = fashion_gen.make_products(count, seed=seed)
  return np.stack([fashion_gen.draw_product_image(p, 0, rng) for p in products])


@pytest.fixture(scope="module")
def imagenet_feature_map_model():
  """Lite0 without pooling for 256x256 inputs, ImageNet weights: [N, 256, 256, 3] -> [N, 8, 8, D]."""
  model = efficientnet_lite.build_efficientnet_lite0(256, pooling=None)
  efficientnet_lite_weights.load_efficientnet_lite_state_dict(model)
  return model


def test_grid_mode_is_the_stride_32_feature_map_cell_by_cell(imagenet_feature_map_model):
  images = toy_images()
  extractor = patch_features.build_patch_feature_extractor(
      lite_config(patch_feature_mode="grid", patch_input_size=32))
  assert isinstance(extractor, grid_patch_features.GridFeatureExtractor)
  features = extractor(images, training=False).numpy()
  assert features.shape == (2, 64, 1280) and features.dtype == np.float32
  pixels = (images.astype(np.float32) - 127.0) / 128.0  # the default normalization
  feature_map = imagenet_feature_map_model(pixels, training=False).numpy()
  for k in (0, 9, 63):
    row, col = divmod(k, 8)
    np.testing.assert_allclose(features[:, k], feature_map[:, row, col], rtol=1e-5, atol=1e-5)
  # ImageNet weights give patches of garment and of background different features.
  assert np.abs(features[0, 0] - features[0, 36]).max() > 0.5


def test_grid_mode_at_64_pixel_patches_pools_2x2_cells_of_the_upsampled_image():
  images = toy_images(count=1)
  config = lite_config(patch_feature_mode="grid", patch_input_size=64)
  extractor = patch_features.build_patch_feature_extractor(config)
  backbone_input = extractor.preprocess(images)
  assert backbone_input.shape == (1, 512, 512, 3)
  feature_map = extractor.backbone(backbone_input, training=False).numpy()
  assert feature_map.shape == (1, 16, 16, 1280)
  features = extractor(images, training=False).numpy()
  np.testing.assert_allclose(features[0, 8 * 3 + 5], feature_map[0, 6:8, 10:12].mean(axis=(0, 1)),
                             rtol=1e-5, atol=1e-5)


def test_patches_mode_runs_each_crop_alone():
  images = toy_images(count=1)
  extractor = patch_features.build_patch_feature_extractor(lite_config())
  assert isinstance(extractor, patch_features.PatchFeatureExtractor)
  assert extractor.input_size == 64  # efficientnet_lite0's default patch side
  features = extractor(images, training=False).numpy()
  k = 27
  row, col = divmod(k, 8)
  crop = (images[:, 32 * row:32 * row + 32, 32 * col:32 * col + 32].astype(np.float32) - 127) / 128
  crop = tf.image.resize(crop, [64, 64], method="bilinear")
  np.testing.assert_allclose(features[:, k], extractor.backbone(crop, training=False).numpy(),
                             rtol=1e-5, atol=1e-5)
  assert np.abs(features[0, k] - features[0, 0]).max() > 0.5  # garment centre vs corner background


@pytest.mark.parametrize("mode", ["patches", "grid"])
def test_precomputed_features_equal_online_features(tmp_path, mode):
  config = lite_config(patch_feature_mode=mode, patch_input_size=32)
  source_dir, output_dir = str(tmp_path / "records"), str(tmp_path / "features")
  images = write_shards(source_dir, num_records=3)
  feature_precompute.precompute_patch_features(
      config, os.path.join(source_dir, "*.tfrecord"), output_dir, batch_size=2, verbose=False)
  online = patch_features.build_patch_feature_extractor(config)
  parsed = list(records.read_records(os.path.join(output_dir, "*.tfrecord"),
                                     with_patch_features=True, feature_dim=1280))
  assert len(parsed) == 3
  for record in parsed:
    expected = online(images[int(record["record_id"])][None], training=False).numpy()[0]
    stored = record["patch_features"].numpy()
    assert stored.shape == (64, 1280)
    np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-4)


def test_the_two_modes_have_their_own_statistics_files():
  patches, grid = lite_config(), lite_config(patch_feature_mode="grid")
  assert (feature_statistics.backbone_fingerprint(patches) !=
          feature_statistics.backbone_fingerprint(grid))
  assert "patch_feature_mode" not in feature_statistics.backbone_fingerprint(patches)


def test_bad_mode_settings_are_named():
  with pytest.raises(ValueError, match="unknown mode 'tiles'"):
    patch_features.build_patch_feature_extractor(lite_config(patch_feature_mode="tiles"))
  with pytest.raises(ValueError, match="not available for backbone 'linear'.*efficientnet_lite0"):
    patch_features.build_patch_feature_extractor(
        ModelConfig(backbone="linear", feature_dim=8, patch_feature_mode="grid"))
  with pytest.raises(ValueError, match="multiple of 32.*got 48"):
    patch_features.build_patch_feature_extractor(
        lite_config(patch_feature_mode="grid", patch_input_size=48))
  with pytest.raises(ValueError, match="outputs 1280-d features but model.feature_dim is 2048"):
    backbones.build_backbone(ModelConfig(backbone="efficientnet_lite0"), load_weights=False)
  with pytest.raises(ValueError, match=r"unsupported file type.*\.pth \(efficientnet_lite0\)"):
    backbones.build_backbone(ModelConfig(
        backbone="linear", feature_dim=8,
        backbone_weights=efficientnet_lite_weights.default_weights_path()))


def test_fashionbert_model_with_grid_features_scores_images_as_their_precomputed_features():
  from fashionbert_tf.modeling import model_builder  # pylint: disable=g-import-not-at-top
  from test_model_forward import text_batch, tiny_config  # pylint: disable=g-import-not-at-top
  model = model_builder.build_fashionbert(tiny_config(
      backbone="efficientnet_lite0", feature_dim=1280, patch_feature_mode="grid",
      patch_input_size=32, patch_feature_normalization="none"))
  images = tf.constant(toy_images(count=2, seed=3))
  precomputed = model.compute_patch_features(images)
  assert precomputed.shape.as_list() == [2, 64, 1280]
  text = text_batch([6, 8])
  online = model({**text, "image": images}, training=False)
  offline = model({**text, "patch_features": precomputed}, training=False)
  np.testing.assert_allclose(online["tia_logits"], offline["tia_logits"], atol=1e-5)
  backbone_variables = {id(v) for v in model.patch_feature_extractor.backbone.variables}
  assert not [v for v in model.trainable_variables if id(v) in backbone_variables]  # frozen
