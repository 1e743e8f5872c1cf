"""ResNeXt (Xie et al., 2017) in tf_keras, laid out like torchvision's `resnext101_32x8d`.

The paper's patch network (FashionBERT section 3.1: "ResNeXt101 is first adopted to extract the
patch features and the dimensions of patch features are 2048"). Neither Keras nor Model Garden has
ResNeXt, so it is written here, layer for layer as torchvision builds it (ResNet "v1.5": the stride
of a downsampling block sits on its 3x3 grouped conv), so that ImageNet weights from a torchvision /
timm `.safetensors` state dict load one to one (`resnext_weights.py`).

Shapes, for input float32 [N, S, S, 3] (ImageNet-normalized, see `pixel_normalization.normalize_pixels`):
  stem:    7x7/2 conv (base_width) -> BN -> ReLU -> 3x3/2 max-pool      [N, S/4, S/4, base_width]
  stage i: blocks_per_stage[i] bottleneck blocks, planes = base_width * 2^i, output 4 * planes
           channels, stride 2 in the first block of every stage after the first
  head:    global average pool                                          [N, 32 * base_width]
ResNeXt-101 (32x8d): blocks_per_stage [3, 4, 23, 3], groups 32, width_per_group 8, base_width 64:
2048-d output. A bottleneck's inner width is `int(planes * width_per_group / base_width) * groups`
(torchvision: `int(planes * (base_width / 64.)) * groups` with its stem fixed at 64).

Patch input size (`model.patch_input_size`): the default is the native 32x32 patch. The network's
/32 downsampling leaves one 1x1 cell per patch before pooling, so the 2048-d feature sees the whole
patch; torchvision pads like PyTorch (symmetric, explicit `ZeroPadding2D` here), so every output
size is the same as in PyTorch. Upsampling patches (e.g. to 224, ImageNet's training scale) is a
config value away and costs (S/32)^2 times more compute.

Layer names are the torchvision state-dict prefixes with "." replaced by "_" (`conv1`, `bn1`,
`layer1_0_conv2`, `layer1_0_downsample_0`, `layer1_0_downsample_1`, ...), which is what the weight
converter relies on.
"""

import tf_keras

# PyTorch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (= Keras momentum 0.9).
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9
EXPANSION = 4  # Bottleneck output channels = 4 * planes.


class _LayerFactory:
  """Makes conv / BN layers named like torchvision keys, with distinct seeded initializers."""

  def __init__(self, seed):
    self._seed = seed
    self._count = 0

  def conv(self, filters, kernel_size, strides=1, groups=1, name=None):
    self._count += 1
    return tf_keras.layers.Conv2D(
        filters, kernel_size, strides=strides, groups=groups, padding="valid", use_bias=False,
        kernel_initializer=tf_keras.initializers.HeNormal(seed=self._seed * 1000 + self._count),
        name=name)

  def batch_norm(self, name):
    return tf_keras.layers.BatchNormalization(
        axis=-1, epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=name)


def _padded(x, padding, name):
  """PyTorch-style symmetric zero padding (a 'same' conv in Keras would pad asymmetrically)."""
  return tf_keras.layers.ZeroPadding2D(padding, name=name)(x) if padding else x


def _bottleneck(x, layers, prefix, planes, width, groups, stride, downsample):
  """One ResNeXt bottleneck block: 1x1 -> 3x3 grouped (stride) -> 1x1 (x4), plus the shortcut."""
  shortcut = x
  y = layers.conv(width, 1, name=f"{prefix}_conv1")(x)
  y = layers.batch_norm(f"{prefix}_bn1")(y)
  y = tf_keras.layers.ReLU(name=f"{prefix}_relu1")(y)
  y = _padded(y, 1, f"{prefix}_pad2")
  y = layers.conv(width, 3, strides=stride, groups=groups, name=f"{prefix}_conv2")(y)
  y = layers.batch_norm(f"{prefix}_bn2")(y)
  y = tf_keras.layers.ReLU(name=f"{prefix}_relu2")(y)
  y = layers.conv(planes * EXPANSION, 1, name=f"{prefix}_conv3")(y)
  y = layers.batch_norm(f"{prefix}_bn3")(y)
  if downsample:
    shortcut = layers.conv(planes * EXPANSION, 1, strides=stride,
                           name=f"{prefix}_downsample_0")(x)
    shortcut = layers.batch_norm(f"{prefix}_downsample_1")(shortcut)
  y = tf_keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
  return tf_keras.layers.ReLU(name=f"{prefix}_out")(y)


def build_resnext(input_size=32, blocks_per_stage=(3, 4, 23, 3), groups=32, width_per_group=8,
                  base_width=64, seed=0, name="resnext"):
  """Builds ResNeXt as a functional `tf_keras.Model`: float32 [N, S, S, 3] -> [N, 32*base_width].

  Args:
    input_size: S, the patch side (>= 32 so that every stage has at least one cell).
    blocks_per_stage: bottleneck blocks in each stage ([3, 4, 23, 3] for ResNeXt-101).
    groups: cardinality, the groups of every 3x3 conv (32).
    width_per_group: channels per group at planes == base_width (8 for "32x8d").
    base_width: stem channels and planes of the first stage (64 in torchvision).
    seed: seeds the random initialization (used when no weights are loaded).
    name: the model's name.

  Raises:
    ValueError: a shape knob that cannot build a network.
  """
  blocks_per_stage = [int(b) for b in blocks_per_stage]
  if not blocks_per_stage or min(blocks_per_stage) < 1:
    raise ValueError(f"model.resnext_blocks_per_stage must be non-empty and >= 1, got "
                     f"{blocks_per_stage}")
  if groups < 1 or width_per_group < 1 or base_width < 1:
    raise ValueError(f"ResNeXt: groups ({groups}), width_per_group ({width_per_group}) and "
                     f"base_width ({base_width}) must be >= 1")
  layers = _LayerFactory(seed)
  images = tf_keras.Input(shape=(input_size, input_size, 3), name="patches")
  x = _padded(images, 3, "stem_pad")
  x = layers.conv(base_width, 7, strides=2, name="conv1")(x)
  x = layers.batch_norm("bn1")(x)
  x = tf_keras.layers.ReLU(name="relu")(x)
  # Zero padding is exact for this max pool: its inputs are ReLU outputs (>= 0).
  x = _padded(x, 1, "maxpool_pad")
  x = tf_keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)

  in_channels = base_width
  for stage, num_blocks in enumerate(blocks_per_stage):
    planes = base_width * 2**stage
    width = int(planes * width_per_group / base_width) * groups
    if width < groups:
      raise ValueError(f"ResNeXt stage {stage + 1}: inner width {width} < groups {groups}")
    for block in range(num_blocks):
      stride = 2 if (stage > 0 and block == 0) else 1
      downsample = block == 0 and (stride != 1 or in_channels != planes * EXPANSION)
      x = _bottleneck(x, layers, f"layer{stage + 1}_{block}", planes, width, groups, stride,
                      downsample)
      in_channels = planes * EXPANSION
  features = tf_keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
  return tf_keras.Model(images, features, name=name)
