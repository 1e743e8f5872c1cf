"""InceptionV3 patch backbone: weights round-trip through a local tf_keras file."""

import numpy as np
import tf_keras

from fashionbert_tf.configs.model import ModelConfig
from fashionbert_tf.modeling import patch_features


def test_inception_v3_weights_load_from_a_local_file_written_by_keras(tmp_path):
  # The file is what a user gets from the plain Keras application model (no top, avg pooled).
  source = tf_keras.applications.InceptionV3(
      include_top=False, weights=None, input_shape=(75, 75, 3), pooling="avg")
  rng = np.random.default_rng(0)
  path = str(tmp_path / "inception_v3_notop.weights.h5")
  source.save_weights(path)

  config = ModelConfig(backbone="inception_v3", backbone_weights=path, feature_dim=2048)
  extractor = patch_features.build_patch_feature_extractor(config)
  assert extractor.input_size == 75 and extractor.normalization == "symmetric"
  assert len(extractor.backbone.weights) == len(source.weights)
  # Keras' random init differs per model, so equality means the file was loaded.
  for loaded, original in zip(extractor.backbone.weights, source.weights):
    np.testing.assert_array_equal(loaded.numpy(), original.numpy(), err_msg=loaded.name)

  image = rng.integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
  features = extractor(image).numpy()
  assert features.shape == (1, 64, 2048)
  # Patch 63 (bottom-right crop), resized to 75 and scaled to [-1, 1], through the source model.
  expected = source(extractor.preprocess(image)[63:64], training=False).numpy()
  np.testing.assert_allclose(features[0, 63], expected[0], rtol=1e-4, atol=1e-4)
  assert not extractor.trainable_variables  # Frozen by default.

