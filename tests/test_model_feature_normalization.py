"""Patch-feature standardization: statistics (compute, store, load), the layer, the model, the run."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.modeling import feature_statistics
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.modeling import patch_feature_normalization
from fashionbert_tf.training import synthetic


def _batches(rng, sizes, dim=6):
  # A large shared component (like CNN / pixel features) plus per-dimension spread.
  common = rng.normal(size=dim) * 5.0
  scale = rng.uniform(0.1, 2.0, size=dim)
  return [common + scale * rng.normal(size=(n, 64, dim)) for n in sizes]


def test_statistics_match_numpy_over_unequal_batches():
  rng = np.random.default_rng(0)
  batches = _batches(rng, [1, 7, 3, 12])
  statistics = feature_statistics.statistics_from_batches(batches, "fp")
  everything = np.concatenate([b.reshape(-1, 6) for b in batches])
  np.testing.assert_allclose(statistics.mean, everything.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(statistics.std, everything.std(0), rtol=1e-5)
  assert statistics.num_images == 23 and statistics.num_patches == 23 * 64


def test_std_floor_keeps_constant_dimensions_finite():
  rng = np.random.default_rng(1)
  batch = rng.normal(size=(4, 64, 5))
  batch[..., 2] = 3.0          # a dead unit: always the same value
  statistics = feature_statistics.statistics_from_batches([batch], "fp")
  assert statistics.std[2] == pytest.approx(
      feature_statistics.STD_FLOOR_FRACTION * np.median(batch.reshape(-1, 5).std(0)), rel=1e-4)
  layer = patch_feature_normalization.PatchFeatureStandardization(5)
  layer.set_statistics(statistics)
  out = layer(batch).numpy()
  assert np.all(np.isfinite(out)) and np.allclose(out[..., 2], 0.0)


def test_nan_features_are_an_error_naming_the_source():
  batch = np.zeros([2, 64, 4])
  batch[1, 3, 2] = np.nan
  with pytest.raises(ValueError, match="shards-x.*NaN"):
    feature_statistics.statistics_from_batches([batch], "fp", source="shards-x")


def test_save_load_round_trip_and_fingerprint_check(tmp_path):
  rng = np.random.default_rng(2)
  statistics = feature_statistics.statistics_from_batches(_batches(rng, [3]), "backbone-A")
  path = feature_statistics.save_statistics(statistics, str(tmp_path / "stats" / "a.npz"))
  loaded = feature_statistics.load_statistics(path, expected_fingerprint="backbone-A")
  np.testing.assert_array_equal(loaded.mean, statistics.mean)
  np.testing.assert_array_equal(loaded.std, statistics.std)
  assert loaded.num_patches == statistics.num_patches
  with pytest.raises(ValueError, match="backbone-A.*backbone-B"):
    feature_statistics.load_statistics(path, expected_fingerprint="backbone-B")
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    feature_statistics.load_statistics(str(tmp_path / "missing.npz"))
  broken = tmp_path / "broken.npz"
  broken.write_bytes(b"not a numpy file")
  with pytest.raises(ValueError, match="broken.npz"):
    feature_statistics.load_statistics(str(broken))


def test_default_path_depends_on_the_backbone_settings():
  config = experiment_config.load_config(None)
  other_seed = dataclasses.replace(config.model, backbone_seed=1)
  assert (feature_statistics.default_path(config.data, config.model) !=
          feature_statistics.default_path(config.data, other_seed))
  assert feature_statistics.default_path(config.data, config.model).startswith(
      os.path.join(config.data.tfrecord_dir, feature_statistics.STATISTICS_DIR))


def test_layer_standardizes_and_rejects_bad_statistics():
  rng = np.random.default_rng(3)
  batches = _batches(rng, [8])
  statistics = feature_statistics.statistics_from_batches(batches, "fp")
  layer = patch_feature_normalization.PatchFeatureStandardization(6)
  assert not layer.statistics_are_set
  layer.set_statistics(statistics)
  assert layer.statistics_are_set
  out = layer(tf.constant(batches[0], tf.float32)).numpy().reshape(-1, 6)
  np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(out.std(0), 1.0, rtol=1e-3)
  with pytest.raises(ValueError, match="6-d"):
    patch_feature_normalization.PatchFeatureStandardization(6).set_statistics(
        dataclasses.replace(statistics, mean=statistics.mean[:4], std=statistics.std[:4]))
  with pytest.raises(ValueError, match="std > 0"):
    layer.set_statistics(dataclasses.replace(statistics, std=np.zeros(6, np.float32)))


def test_unknown_mode_is_a_clear_error():
  config = experiment_config.load_config(None, [{"model": dict(
      synthetic.tiny_model_overrides(), patch_feature_normalization="whiten")}])
  with pytest.raises(ValueError, match="patch_feature_normalization.*whiten.*standardize"):
    model_builder.build_fashionbert(config.model)


def _tiny_model(feature_dim=8, **model):
  config = experiment_config.load_config(None, [{"model": dict(
      synthetic.tiny_model_overrides(feature_dim=feature_dim),
      patch_feature_normalization="standardize", **model)}])
  tf.keras.utils.set_random_seed(0)
  return model_builder.build_fashionbert(config.model)


def test_model_applies_the_statistics_and_checkpoints_them(tmp_path):
  batch = synthetic.synthetic_examples(4, vocab_size=40, feature_dim=8, num_masked_tokens=2)
  model = _tiny_model()
  before = model(batch, training=False)["tia_logits"].numpy()
  rng = np.random.default_rng(4)
  statistics = feature_statistics.statistics_from_batches(
      [rng.normal(size=(3, 64, 8)) * 3.0 + 2.0], "fp")
  model.patch_feature_normalization.set_statistics(statistics)
  after = model(batch, training=False)
  assert not np.allclose(after["tia_logits"].numpy(), before)
  # MPM targets are the standardized features of the masked patches.
  positions = batch["masked_patch_positions"]
  expected = (np.take_along_axis(batch["patch_features"], positions[:, :, None], 1)
              - statistics.mean) / statistics.std
  np.testing.assert_allclose(after["mpm_targets"].numpy(), expected, rtol=1e-5, atol=1e-5)

  path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
  restored = _tiny_model()
  tf.train.Checkpoint(model=restored).restore(path).expect_partial()
  assert restored.patch_feature_normalization.statistics_are_set
  np.testing.assert_allclose(restored(batch, training=False)["tia_logits"].numpy(),
                             after["tia_logits"].numpy(), rtol=1e-5, atol=1e-6)


def test_ensure_statistics_computes_once_from_the_training_records(toy_data_config, tmp_path):
  config = experiment_config.ExperimentConfig(data=dataclasses.replace(
      toy_data_config, tfrecord_dir=toy_data_config.tfrecord_dir))
  config.model.backbone = "linear"
  config.model.feature_dim = 16
  config.model.patch_feature_statistics = str(tmp_path / "stats.npz")
  statistics = feature_statistics.ensure_statistics(config)
  assert os.path.exists(config.model.patch_feature_statistics)
  assert statistics.num_images > 20 and statistics.mean.shape == (16,)
  # The same as running the backbone over the training images directly.
  from fashionbert_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data import records  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.modeling import patch_features  # pylint: disable=g-import-not-at-top
  extractor = patch_features.build_patch_feature_extractor(config.model)
  images = np.stack([r["image"].numpy() for r in records.read_records(
      pipeline.split_file_pattern(config.data, "train"))])
  features = extractor(images, training=False).numpy().reshape(-1, 16)
  np.testing.assert_allclose(statistics.mean, features.mean(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(statistics.std, features.std(0), rtol=1e-4)
  # Second call loads the file (a changed file is what comes back).
  feature_statistics.save_statistics(
      dataclasses.replace(statistics, mean=statistics.mean + 1.0),
      config.model.patch_feature_statistics)
  again = feature_statistics.ensure_statistics(config)
  np.testing.assert_allclose(again.mean, statistics.mean + 1.0)
