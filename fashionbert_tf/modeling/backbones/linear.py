"""The `linear` patch backbone: a linear projection of a patch's raw pixels (tests, CPU demo).

Not in the paper (which uses ResNeXt-101 or InceptionV3, section 2.2 / Table 2); it stands in for a
pre-trained CNN where none is available (offline tests, the CPU demo) and costs one matmul.
"""

import tf_keras


def build_linear_backbone(input_size, feature_dim, seed=0, name="linear_backbone"):
  """Builds a model mapping patches float32 [N, S, S, 3] -> features float32 [N, D].

  Each patch's pixels (already scaled, e.g. to [0, 1]) are flattened to S*S*3 values and projected
  by one dense layer (kernel [S*S*3, D], bias [D]) to D = `feature_dim` dims.

  Args:
    input_size: S, the patch side length the backbone receives.
    feature_dim: D, the output feature size.
    seed: seed of the Glorot-uniform kernel init. Seeded initializers are deterministic in tf_keras,
      so two builds with the same seed (the model and the feature-precompute tool) project alike.
    name: the model's name.

  Returns:
    A `tf_keras.Model`.
  """
  patches = tf_keras.Input(shape=(input_size, input_size, 3), name="patches")
  flat = tf_keras.layers.Flatten(name="flatten_pixels")(patches)
  features = tf_keras.layers.Dense(
      feature_dim,
      kernel_initializer=tf_keras.initializers.GlorotUniform(seed=seed),
      bias_initializer="zeros",
      name="pixel_projection")(flat)
  return tf_keras.Model(patches, features, name=name)
