"""Loads ImageNet ResNeXt weights from a torchvision / timm `.safetensors` state dict.

The state dict is read with safetensors' NumPy API (no torch, no pickle). Key layout (torchvision
`resnext101_32x8d`, identical in timm):

  conv1.weight                          stem conv         [64, 3, 7, 7]      OIHW
  bn1.{weight,bias,running_mean,running_var,num_batches_tracked}
  layer{s}.{b}.conv{1,2,3}.weight       block convs       conv2 is grouped: [O, I/groups, 3, 3]
  layer{s}.{b}.bn{1,2,3}.*
  layer{s}.0.downsample.0.weight        shortcut 1x1 conv
  layer{s}.0.downsample.1.*             shortcut BN
  fc.weight, fc.bias                    ImageNet classifier: ignored (the patch feature is the pooled
                                        2048-d vector before it)

Mapping onto `resnext.build_resnext` (layer name = key prefix with "." -> "_"):
  conv weight OIHW -> Conv2D kernel HWIO (transpose (2, 3, 1, 0)); for a grouped conv both layouts
  split output channels into `groups` contiguous blocks, block j reading input block j, and tf_keras'
  `Conv2D(groups=...)` kernel is [kh, kw, I/groups, O], so the same transpose is exact.
  BN weight -> gamma, bias -> beta, running_mean -> moving_mean, running_var -> moving_variance;
  `num_batches_tracked` (a counter, not a weight) is ignored.

Strict: every model variable is assigned exactly once, and nothing is assigned unless the whole
state dict fits. A missing key, an unexpected key or a mis-shaped tensor raises `ValueError` naming
the key (and the file). Values are cast to float32; bfloat16 files (which NumPy cannot read) must be
converted to float32 / float16 first.
"""

import numpy as np
import tf_keras

from fashionbert_tf.modeling.backbones import state_dict_check

# Keys present in torchvision / timm files that are not weights of the feature extractor.
_IGNORED_PREFIXES = ("fc.",)
_IGNORED_SUFFIXES = (".num_batches_tracked",)

_BN_PARAMS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
              ("running_var", "moving_variance"))


def _torch_prefix(layer_name):
  return layer_name.replace("_", ".")


def _variable_suffix(variable):
  """'resnext/conv1/kernel:0' -> 'kernel'."""
  return variable.name.split("/")[-1].split(":")[0]


def expected_state_dict_layout(model):
  """Maps each torchvision key the model needs to (variable, torch shape, to-Keras transform).

  Args:
    model: a ResNeXt built by `resnext.build_resnext`.

  Returns:
    dict key -> (tf.Variable, tuple torch_shape, callable numpy -> numpy).

  Raises:
    ValueError: a model variable that no key maps to (the model is not a ResNeXt of this layout).
  """
  layout = {}
  covered = set()
  for layer in model.layers:
    if not layer.weights:
      continue
    prefix = _torch_prefix(layer.name)
    by_suffix = {_variable_suffix(v): v for v in layer.weights}
    if isinstance(layer, tf_keras.layers.Conv2D):
      kernel = by_suffix["kernel"]
      kh, kw, i, o = kernel.shape
      layout[f"{prefix}.weight"] = (kernel, (o, i, kh, kw), lambda w: np.transpose(w, (2, 3, 1, 0)))
      covered.add(id(kernel))
    elif isinstance(layer, tf_keras.layers.BatchNormalization):
      for torch_name, keras_name in _BN_PARAMS:
        variable = by_suffix[keras_name]
        layout[f"{prefix}.{torch_name}"] = (variable, tuple(variable.shape), lambda w: w)
        covered.add(id(variable))
  for variable in model.weights:
    if id(variable) not in covered:
      raise ValueError(f"ResNeXt converter: model variable {variable.name} has no state-dict key")
  return layout


def assign_state_dict(model, state_dict, source="state dict"):
  """Assigns a torchvision-layout ResNeXt state dict (name -> NumPy array) to `model`.

  Args:
    model: a ResNeXt built by `resnext.build_resnext` with the file's shape knobs.
    state_dict: dict str -> np.ndarray, torchvision key layout.
    source: where the state dict came from, for error messages.

  Raises:
    ValueError: missing keys, unexpected keys or mis-shaped tensors (all named); nothing is
      assigned then.
  """
  layout = expected_state_dict_layout(model)
  ignored = [k for k in state_dict
             if k.startswith(_IGNORED_PREFIXES) or k.endswith(_IGNORED_SUFFIXES)]
  problems = state_dict_check.state_dict_problems(
      {key: shape for key, (_, shape, _) in layout.items()}, state_dict, ignored)
  if problems:
    raise ValueError(
        f"ResNeXt weights from {source} do not fit model {model.name!r} (check "
        f"model.resnext_* against the file): " + "; ".join(problems))

  assigned = set()
  for key, (variable, _, to_keras) in layout.items():
    if id(variable) in assigned:
      raise ValueError(f"ResNeXt converter: variable {variable.name} assigned twice ({key})")
    value = to_keras(np.asarray(state_dict[key], dtype=np.float32))
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))
    assigned.add(id(variable))
  if len(assigned) != len(model.weights):
    raise ValueError(f"ResNeXt converter: assigned {len(assigned)} of {len(model.weights)} "
                     f"variables of {model.name!r}")


def read_state_dict(path):
  """Reads a `.safetensors` file into dict str -> np.ndarray (NumPy API: no torch, no pickle)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  try:
    return load_file(path)
  except (TypeError, ValueError, OSError) as e:
    raise ValueError(f"cannot read ResNeXt state dict {path} with safetensors' NumPy API "
                     f"(bfloat16 tensors must be converted to float32 first): {e}") from e


def load_resnext_state_dict(model, path):
  """Loads a torchvision / timm ResNeXt `.safetensors` file into `model` (strict, see module doc)."""
  assign_state_dict(model, read_state_dict(path), source=path)


def convert_to_keras_weights(safetensors_path, output_path, model):
  """Loads a torchvision / timm state dict into `model` and saves tf_keras weights to `output_path`.

  Args:
    safetensors_path: the `.safetensors` state dict.
    output_path: a `.weights.h5` (or `.h5`) file, loadable as `model.backbone_weights`.
    model: a ResNeXt from `resnext.build_resnext` with the file's shape knobs.
  """
  if not output_path.endswith(".h5"):
    raise ValueError(f"output {output_path}: expected a .h5 / .weights.h5 file name")
  load_resnext_state_dict(model, safetensors_path)
  model.save_weights(output_path)
