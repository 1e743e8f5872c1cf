"""Loads a patch backbone's pre-trained weights from a local file, choosing the reader by suffix.

  - `.safetensors`: a torchvision/timm ResNeXt state dict ("resnext101"), converted by
    `resnext_weights.load_resnext_state_dict`, or an EfficientNet-PyTorch Lite0 state dict
    ("efficientnet_lite0", `efficientnet_lite_weights`).
  - `.pth`: a legacy-format PyTorch state dict, read without torch by `pth_reader`
    ("efficientnet_lite0" only: the packaged ImageNet weights).
  - `.h5` / `.weights.h5`: weights saved by tf_keras' `Model.save_weights` for the same
    architecture (e.g. `tf_keras.applications.InceptionV3(include_top=False, pooling="avg")`, or the
    output of tools/convert_resnext_weights.py). tf_keras checks that every layer's weights match.
"""

import os

from fashionbert_tf.modeling.backbones import efficientnet_lite_weights
from fashionbert_tf.modeling.backbones import resnext_weights


def load_backbone_weights(backbone, backbone_name, path):
  """Loads `path` into `backbone` (a built `tf_keras.Model`).

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: an unsupported suffix, or weights that do not fit the architecture (the message
      names the file and, where the reader knows it, the variable or key).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"model.backbone_weights: file not found: {path}")
  if backbone_name == "efficientnet_lite0" and path.endswith((".pth", ".safetensors")):
    efficientnet_lite_weights.load_efficientnet_lite_state_dict(backbone, path)
    return
  if path.endswith(".safetensors"):
    if backbone_name != "resnext101":
      raise ValueError(
          f"model.backbone_weights={path}: .safetensors state dicts are only supported for "
          f"backbones 'resnext101' and 'efficientnet_lite0', not {backbone_name!r}; use a "
          f"tf_keras .h5 / .weights.h5 file")
    resnext_weights.load_resnext_state_dict(backbone, path)
    return
  if path.endswith(".h5"):
    try:
      backbone.load_weights(path)
    except (ValueError, KeyError) as e:
      raise ValueError(
          f"model.backbone_weights={path} does not fit backbone {backbone_name!r} "
          f"({backbone.name}): {e}") from e
    return
  raise ValueError(
      f"model.backbone_weights={path}: unsupported file type; expected .safetensors "
      f"(resnext101, efficientnet_lite0), .pth (efficientnet_lite0) or a tf_keras .h5 / "
      f".weights.h5 file")
