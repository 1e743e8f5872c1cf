"""InceptionV3 patch backbone: `tf_keras.applications.InceptionV3` without its classifier.

Paper section 3.4 / Table 2 compares InceptionV3 ("V3") with ResNeXt-101 as the patch network, both
giving 2048-d features. Keras' model (include_top=False, pooling="avg") outputs exactly that: the
global average of its last 2048-channel block. Weights never download: they come from a local
tf_keras file (`model.backbone_weights`, .h5 / .weights.h5 as `Model.save_weights` writes them for
the same no-top model); empty means random init (tests only).

InceptionV3 rejects inputs smaller than 75x75 (its stem and reductions need them), so 32x32 patches
are bilinearly upsampled to `model.patch_input_size` (default 75; 299 is ImageNet's training size).
Pixels are scaled to [-1, 1] by default (`model.image_normalization` "symmetric"), what Keras'
`inception_v3.preprocess_input` does and what Keras' ImageNet weights expect.
"""

import tf_keras


def build_inception_v3(input_size=75):
  """Builds InceptionV3 (no top, average pooled): float32 [N, S, S, 3] -> float32 [N, 2048]."""
  model = tf_keras.applications.InceptionV3(
      include_top=False, weights=None, input_shape=(input_size, input_size, 3), pooling="avg")
  # The model keeps Keras' own name and layer names, so weight files saved from the plain
  # application model load here unchanged.
  return model
