"""The patch feature extractor: 8x8 grid cutting (row-major), pixel scaling, resize, freezing."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from fashionbert_tf.configs.model import ModelConfig
from fashionbert_tf.modeling import backbones
from fashionbert_tf.modeling import patch_features
from fashionbert_tf.modeling import pixel_normalization


def random_images(batch=2, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (batch, 256, 256, 3), dtype=np.uint8)


def test_patch_k_is_the_row_major_32x32_crop():
  images = random_images()
  patches = patch_features.cut_into_patches(tf.constant(images)).numpy()
  assert patches.shape == (2, 64, 32, 32, 3)
  for k in range(64):
    row, col = divmod(k, 8)
    np.testing.assert_array_equal(
        patches[:, k], images[:, 32 * row:32 * row + 32, 32 * col:32 * col + 32], err_msg=f"k={k}")


def linear_config(**overrides):
  return ModelConfig(backbone="linear", feature_dim=8, **overrides)


def test_linear_features_are_the_projection_of_each_crop_scaled_to_unit_range():
  extractor = patch_features.build_patch_feature_extractor(linear_config())
  images = random_images()
  features = extractor(images).numpy()
  assert features.shape == (2, 64, 8) and features.dtype == np.float32
  dense = extractor.backbone.get_layer("pixel_projection")
  kernel, bias = dense.kernel.numpy(), dense.bias.numpy()
  for k in (0, 7, 8, 63):
    row, col = divmod(k, 8)
    crop = images[:, 32 * row:32 * row + 32, 32 * col:32 * col + 32].astype(np.float64) / 255.0
    expected = crop.reshape(2, -1) @ kernel + bias
    np.testing.assert_allclose(features[:, k], expected, rtol=1e-4, atol=1e-4, err_msg=f"k={k}")


def test_symmetric_scaling_and_resize_reach_the_backbone():
  config = linear_config(image_normalization="symmetric", patch_input_size=48)
  extractor = patch_features.build_patch_feature_extractor(config)
  images = random_images(batch=1)
  backbone_input = extractor.preprocess(images).numpy()
  assert backbone_input.shape == (64, 48, 48, 3)
  crop = images[0, 32:64, 64:96].astype(np.float32) / 127.5 - 1.0  # patch 10: row 1, column 2
  expected = tf.image.resize(crop[None], [48, 48], method="bilinear").numpy()[0]
  np.testing.assert_allclose(backbone_input[10], expected, atol=1e-5)
  assert backbone_input.min() >= -1.0 and backbone_input.max() <= 1.0


def test_imagenet_normalization_uses_torchvision_mean_and_std():
  pixels = tf.constant([[0.0, 127.5, 255.0]])
  out = pixel_normalization.normalize_pixels(pixels, "imagenet").numpy()
  expected = (np.array([0.0, 0.5, 1.0]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
  np.testing.assert_allclose(out[0], expected, rtol=1e-6)


def test_two_builds_of_one_config_give_the_same_features():
  images = random_images(batch=1)
  first = patch_features.build_patch_feature_extractor(linear_config())(images)
  second = patch_features.build_patch_feature_extractor(linear_config())(images)
  np.testing.assert_array_equal(first.numpy(), second.numpy())
  other_seed = patch_features.build_patch_feature_extractor(linear_config(backbone_seed=1))(images)
  assert not np.allclose(first.numpy(), other_seed.numpy())


def gradient_count(extractor, images):
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(extractor(images, training=True) ** 2)
  grads = tape.gradient(loss, extractor.trainable_variables)
  return len([g for g in grads if g is not None and np.any(g.numpy() != 0)])


def test_frozen_by_default_and_trainable_by_flag():
  images = random_images(batch=1)
  frozen = patch_features.build_patch_feature_extractor(linear_config())
  frozen(images)
  assert not frozen.trainable_variables and len(frozen.non_trainable_variables) == 2
  assert gradient_count(frozen, images) == 0
  trainable = patch_features.build_patch_feature_extractor(linear_config(backbone_trainable=True))
  trainable(images)
  assert len(trainable.trainable_variables) == 2
  assert gradient_count(trainable, images) == 2


def test_bad_inputs_and_configs_are_named():
  extractor = patch_features.build_patch_feature_extractor(linear_config())
  with pytest.raises(TypeError, match="uint8"):
    extractor(np.zeros([1, 256, 256, 3], np.float32))
  with pytest.raises(ValueError, match=r"\[B, 256, 256, 3\]"):
    extractor(np.zeros([1, 128, 128, 3], np.uint8))
  with pytest.raises(ValueError, match="unknown backbone 'vgg16'.*linear"):
    patch_features.build_patch_feature_extractor(ModelConfig(backbone="vgg16"))
  with pytest.raises(ValueError, match="unknown normalization 'zscore'"):
    patch_features.build_patch_feature_extractor(linear_config(image_normalization="zscore"))
  with pytest.raises(ValueError, match="patch_input_size=64 is below the minimum 75"):
    backbones.resolve_input_size(ModelConfig(backbone="inception_v3", patch_input_size=64))
  with pytest.raises(FileNotFoundError, match="no_such.weights.h5"):
    patch_features.build_patch_feature_extractor(
        linear_config(backbone_weights="/nonexistent/no_such.weights.h5"))


def test_weights_file_of_another_architecture_is_an_error_naming_the_file(tmp_path):
  other = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2),
                               tf_keras.layers.Dense(3)])
  path = str(tmp_path / "not_linear.weights.h5")
  other.save_weights(path)
  with pytest.raises(ValueError, match="not_linear.weights.h5 does not fit backbone 'linear'"):
    patch_features.build_patch_feature_extractor(linear_config(backbone_weights=path))


def test_linear_weights_round_trip_through_a_keras_file(tmp_path):
  source = patch_features.build_patch_feature_extractor(linear_config(backbone_seed=5))
  path = str(tmp_path / "linear.weights.h5")
  source.backbone.save_weights(path)
  loaded = patch_features.build_patch_feature_extractor(linear_config(backbone_weights=path))
  images = random_images(batch=1)
  np.testing.assert_array_equal(loaded(images).numpy(), source(images).numpy())


def test_features_are_float32_under_mixed_precision():
  images = random_images(batch=1)
  reference = patch_features.build_patch_feature_extractor(linear_config())(images).numpy()
  tf_keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    extractor = patch_features.build_patch_feature_extractor(linear_config())
    features = extractor(images)
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")
  assert features.dtype == tf.float32
  np.testing.assert_allclose(features.numpy(), reference, rtol=2e-2, atol=2e-2)
