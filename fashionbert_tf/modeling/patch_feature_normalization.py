"""Patch-feature conditioning before the patch projection (`model.patch_feature_normalization`).

Not in the paper, which feeds the CNN's patch features to BERT directly. Why it is needed: CNN
features (ResNeXt / InceptionV3: non-negative, large mean) and the linear pixel projection share a
large image-independent component. On the toy data the linear features' per-dimension spread
across patches is ~0.19 against a mean magnitude of ~0.6; after the projection and the embedding
LayerNorm (shared with the text) every image then looks nearly alike to the encoder, the [CLS]
output hardly depends on the image, and text-image alignment (TIA) stays at chance (0.693 loss)
however long it trains. Standardizing each feature dimension with statistics of the training
images removes the common component and gives every dimension unit spread, so the image content
reaches the encoder. The statistics are computed once (`feature_statistics.py`) and stored with the
data; this layer holds them as non-trainable variables, so checkpoints, evaluation and exported
SavedModels all apply exactly the statistics the model was trained with.

Modes:
  none         features go to the projection as the backbone gives them (the paper, literally);
  standardize  (x - mean_d) / std_d per feature dimension d (the default).

Order inside the model: backbone (or precomputed) features -> this layer -> masked patches zeroed
(so a masked patch is set to the training mean, not to a far-off raw zero) -> projection. The MPM
targets are the standardized features too: the KL target softmax(feature) over D dimensions then
reflects the patch's content rather than the shared component (on raw linear features MPM is
nearly trivial: its loss falls to ~0.03 while TIA learns nothing).
"""

import numpy as np
import tensorflow as tf
import tf_keras

NORMALIZATIONS = ("none", "standardize")


class PatchFeatureStandardization(tf_keras.layers.Layer):
  """float [B, 64, D] patch features -> float32 [B, 64, D], (x - mean) / std per dimension.

  `mean` and `std` [D] are non-trainable variables (saved in checkpoints and SavedModels) set once
  with `set_statistics` from `feature_statistics.FeatureStatistics` (pretraining does it on a fresh
  start; a resumed run, evaluation and export restore them from the checkpoint); `num_patches`
  records how many patches they were computed from (0 = never set: `statistics_are_set` is False). Always computes in float32, also under a mixed-precision policy.
  """

  def __init__(self, feature_dim, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.feature_dim = int(feature_dim)

  def build(self, input_shape):
    self.mean = self.add_weight("mean", shape=[self.feature_dim], initializer="zeros",
                                trainable=False, dtype=tf.float32)
    self.std = self.add_weight("std", shape=[self.feature_dim], initializer="ones",
                               trainable=False, dtype=tf.float32)
    self.num_patches = self.add_weight("num_patches", shape=[], initializer="zeros",
                                       trainable=False, dtype=tf.float32)
    super().build(input_shape)

  @property
  def statistics_are_set(self):
    return self.built and float(self.num_patches.numpy()) > 0

  def set_statistics(self, statistics):
    """Assigns a `feature_statistics.FeatureStatistics` (mean, std [D], num_patches).

    Raises:
      ValueError: the statistics have another dimension, or a non-positive / non-finite std.
    """
    mean = np.asarray(statistics.mean, np.float32)
    std = np.asarray(statistics.std, np.float32)
    if mean.shape != (self.feature_dim,) or std.shape != (self.feature_dim,):
      raise ValueError(
          f"patch feature statistics ({statistics.source}) have mean {mean.shape} and std "
          f"{std.shape}; the model's patch features are {self.feature_dim}-d")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
      raise ValueError(f"patch feature statistics ({statistics.source}): mean / std must be "
                       "finite and std > 0")
    if not self.built:
      self.build(tf.TensorShape([None, None, self.feature_dim]))
    self.mean.assign(mean)
    self.std.assign(std)
    self.num_patches.assign(float(statistics.num_patches))

  def call(self, features):
    features = tf.cast(features, tf.float32)
    return (features - self.mean) / self.std

  def get_config(self):
    config = super().get_config()
    config.update(feature_dim=self.feature_dim)
    return config


def build_patch_feature_normalization(model_config, feature_dim):
  """The layer `model.patch_feature_normalization` asks for, or None for `none`.

  Raises:
    ValueError: unknown mode (the message lists the known ones).
  """
  mode = model_config.patch_feature_normalization
  if mode not in NORMALIZATIONS:
    raise ValueError(f"model.patch_feature_normalization: unknown mode {mode!r}; expected one of "
                     f"{', '.join(NORMALIZATIONS)}")
  if mode == "none":
    return None
  return PatchFeatureStandardization(feature_dim, name="patch_feature_normalization")
