"""Patch backbones: each maps patches float32 [N, S, S, 3] (scaled pixels) -> float32 [N, D].

Paper section 2.2: "It is possible to select any pre-trained image model (e.g., InceptionV3 and
ResNeXt-101) as the backbone of the patch network"; section 3.1 uses ResNeXt-101 (2048-d features).

`build_backbone(model_config)` is the factory, chosen by `model.backbone`:
  - "resnext101":   ResNeXt-101 (32x8d), ours, in tf_keras (`resnext.py`); weights from a
                    torchvision/timm `.safetensors` state dict (`resnext_weights.py`) or a tf_keras
                    `.h5` / `.weights.h5` file.
  - "inception_v3": `tf_keras.applications.InceptionV3` (`inception_v3.py`); weights from a local
                    tf_keras `.h5` / `.weights.h5` file.
  - "linear":       a linear projection of the raw pixels (`linear.py`), for tests and the CPU demo.

`backbone_spec(name)` tells each backbone's default patch input size and pixel normalization.
"""

import dataclasses

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
      ("imagenet", "unit" or "symmetric"; see `patch_features.normalize_pixels`).
  """
  default_input_size: int
  min_input_size: int
  default_normalization: str


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
}

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


def resolve_normalization(model_config):
  """The pixel scaling name: `model.image_normalization`, or the backbone default if empty."""
  return model_config.image_normalization or backbone_spec(model_config.backbone).default_normalization


def build_backbone(model_config, load_weights=True):
  """Builds the backbone named by `model.backbone` (weights from `model.backbone_weights`).

  Args:
    model_config: a `ModelConfig`.
    load_weights: False skips loading `model.backbone_weights` (the caller loads them later).

  Returns:
    A `tf_keras.Model` mapping float32 [N, S, S, 3] -> float32 [N, D], S = `resolve_input_size`,
    D = `model.feature_dim`.

  Raises:
    ValueError: unknown backbone name, or the backbone's output size differs from
      `model.feature_dim`.
    FileNotFoundError: `model.backbone_weights` names a missing file.
  """
  name = model_config.backbone
  backbone_spec(name)  # Fails first, with the list of known names.
  input_size = resolve_input_size(model_config)
  if name == "linear":
    backbone = linear.build_linear_backbone(
        input_size, model_config.feature_dim, seed=model_config.backbone_seed)
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
  if output_dim != model_config.feature_dim:
    raise ValueError(
        f"backbone {name!r} outputs {output_dim}-d features but model.feature_dim is "
        f"{model_config.feature_dim}; set model.feature_dim={output_dim}")
  if load_weights and model_config.backbone_weights:
    weights_io.load_backbone_weights(backbone, name, model_config.backbone_weights)
  return backbone
