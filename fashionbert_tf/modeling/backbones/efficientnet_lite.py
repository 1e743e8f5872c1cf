"""EfficientNet-Lite0 (Google, 2020) in tf_keras: a small ImageNet CNN for the patch network.

FashionBERT section 2.2 lets "any pre-trained image model" be the patch network. EfficientNet-Lite0
is EfficientNet-B0 (Tan and Le, 2019) made for mobile accelerators, as TensorFlow's reference builds
it (tensorflow/tpu `models/official/efficientnet/lite/efficientnet_lite_builder.py`):
no squeeze-and-excitation, ReLU6 instead of swish, stem (32 channels) and head (1280 channels) fixed,
BatchNorm epsilon 1e-3, TensorFlow "same" padding (asymmetric for stride 2: the extra row / column
goes at the bottom / right), inputs scaled as (x - 127) / 128 ("inception-style" mean / std,
`pixel_normalization.normalize_pixels` "efficientnet_lite").

Shapes, for input float32 [N, S, S, 3]:
  stem:   3x3/2 conv 32 -> BN -> ReLU6                                   [N, S/2, S/2, 32]
  blocks: 16 MBConv blocks in 7 stages (`BLOCKS`): [1x1 expand conv (x6) -> BN -> ReLU6] ->
          kxk depthwise conv (stride) -> BN -> ReLU6 -> 1x1 project conv -> BN, plus the input when
          the stride is 1 and the channels agree                          [N, S/32, S/32, 320]
  head:   1x1 conv 1280 -> BN -> ReLU6                                    [N, S/32, S/32, 1280]
  pool:   global average ("avg"), the 1280-d patch feature               [N, 1280]
  top:    dropout 0.2 -> dense 1000 (ImageNet logits), `include_top` only
All convolutions are bias-free. Drop-connect (stochastic depth, survival 0.8 in TensorFlow's
training) is not built: it is the identity at inference, and the backbone is frozen by default.

Layer names: `stem_conv`, `stem_bn`, `block{i}_{expand,depthwise,project}_{conv,bn}` (i = 0..15),
`head_conv`, `head_bn`, `classifier`; `efficientnet_lite_weights.py` maps each to its key prefix in
the PyTorch port's state dict.
"""

import tf_keras

BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
DROPOUT_RATE = 0.2
# The network's total downsampling: an S x S input gives an S/32 x S/32 feature map.
STRIDE = 32


# (repeats, kernel, stride of the first block, expand ratio, output channels): EfficientNet-B0's
# seven stages ("r1_k3_s11_e1_i32_o16", ... in the reference); Lite0 scales neither width nor depth.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def block_specs():
  """The 16 blocks in order: list of (kernel, stride, expand_ratio, in_channels, out_channels)."""
  specs = []
  channels = STEM_FILTERS
  for repeats, kernel, stride, expand, out_channels in STAGES:
    for index in range(repeats):
      specs.append((kernel, stride if index == 0 else 1, expand, channels, out_channels))
      channels = out_channels
  return specs


class _LayerFactory:
  """Makes conv / BN layers with distinct seeded initializers (used when no weights are loaded)."""

  def __init__(self, seed):
    self._seed = seed
    self._count = 0

  def _initializer(self):
    self._count += 1
    return tf_keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal",
        seed=self._seed * 1000 + self._count)

  def conv(self, filters, kernel_size, strides=1, name=None):
    return tf_keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_initializer=self._initializer(), name=name)

  def depthwise_conv(self, kernel_size, strides, name):
    return tf_keras.layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding="same", use_bias=False,
        depthwise_initializer=self._initializer(), name=name)

  def batch_norm(self, name):
    return tf_keras.layers.BatchNormalization(
        axis=-1, epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=name)


def _relu6(name):
  return tf_keras.layers.ReLU(max_value=6.0, name=name)


def _mbconv_block(x, layers, index, kernel, stride, expand, in_channels, out_channels):
  """One MBConv block without squeeze-excite: [N, H, W, in] -> [N, H/stride, W/stride, out]."""
  prefix = f"block{index}"
  y = x
  if expand != 1:
    y = layers.conv(in_channels * expand, 1, name=f"{prefix}_expand_conv")(y)
    y = layers.batch_norm(f"{prefix}_expand_bn")(y)
    y = _relu6(f"{prefix}_expand_relu6")(y)
  y = layers.depthwise_conv(kernel, stride, name=f"{prefix}_depthwise_conv")(y)
  y = layers.batch_norm(f"{prefix}_depthwise_bn")(y)
  y = _relu6(f"{prefix}_depthwise_relu6")(y)
  y = layers.conv(out_channels, 1, name=f"{prefix}_project_conv")(y)
  y = layers.batch_norm(f"{prefix}_project_bn")(y)
  if stride == 1 and in_channels == out_channels:
    y = tf_keras.layers.Add(name=f"{prefix}_add")([y, x])
  return y


def build_efficientnet_lite0(input_size=224, pooling="avg", include_top=False, seed=0,
                             name="efficientnet_lite0"):
  """Builds EfficientNet-Lite0 as a functional `tf_keras.Model`.

  Args:
    input_size: S, the input side; None builds a fully convolutional model for any size (the
      feature map is ceil(S / 32) on a side).
    pooling: "avg" returns the globally averaged feature float32 [N, 1280]; None returns the
      feature map float32 [N, S/32, S/32, 1280] (the grid mode of the patch features).
    include_top: adds ImageNet's classifier (dropout, dense 1000): output logits float32 [N, 1000];
      needs `pooling="avg"`.
    seed: seeds the random initialization (used when no weights are loaded).
    name: the model's name.

  Returns:
    A `tf_keras.Model` taking float32 [N, S, S, 3], pixels scaled as (x - 127) / 128.

  Raises:
    ValueError: `include_top` without pooling, or an unknown `pooling`.
  """
  if pooling not in ("avg", None):
    raise ValueError(f"EfficientNet-Lite0: pooling must be 'avg' or None, got {pooling!r}")
  if include_top and pooling != "avg":
    raise ValueError("EfficientNet-Lite0: include_top needs pooling='avg'")
  layers = _LayerFactory(seed)
  images = tf_keras.Input(shape=(input_size, input_size, 3), name="patches")
  x = layers.conv(STEM_FILTERS, 3, strides=2, name="stem_conv")(images)
  x = layers.batch_norm("stem_bn")(x)
  x = _relu6("stem_relu6")(x)
  for index, spec in enumerate(block_specs()):
    x = _mbconv_block(x, layers, index, *spec)
  x = layers.conv(HEAD_FILTERS, 1, name="head_conv")(x)
  x = layers.batch_norm("head_bn")(x)
  x = _relu6("head_relu6")(x)
  if pooling == "avg":
    x = tf_keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
  if include_top:
    x = tf_keras.layers.Dropout(DROPOUT_RATE, name="dropout")(x)
    x = tf_keras.layers.Dense(
        NUM_CLASSES, kernel_initializer=tf_keras.initializers.VarianceScaling(
            1.0 / 3.0, mode="fan_out", distribution="uniform", seed=seed),
        name="classifier")(x)
  return tf_keras.Model(images, x, name=name)
