"""ResNeXt in tf_keras + the torchvision/timm `.safetensors` converter, on a tiny ResNeXt.

The state dict is written by the test in torchvision's key layout (built here independently of the
converter's own mapping), and the forward pass is compared with a NumPy implementation of
torchvision's ResNeXt that reads the PyTorch-layout (OIHW, NCHW) tensors directly.
"""

import numpy as np
import pytest
from safetensors.numpy import save_file

from fashionbert_tf.configs.model import ModelConfig
from fashionbert_tf.modeling import patch_features
from fashionbert_tf.modeling import pixel_normalization
from fashionbert_tf.modeling.backbones import resnext
from fashionbert_tf.modeling.backbones import resnext_weights

TINY = dict(blocks_per_stage=[1, 2, 1, 1], groups=2, width_per_group=2, base_width=8)
TINY_FEATURE_DIM = 32 * TINY["base_width"]


def torchvision_resnext_state_dict(blocks_per_stage, groups, width_per_group, base_width, seed=0):
  """A random state dict with torchvision's `ResNet(Bottleneck, ...)` keys and shapes (+ fc)."""
  rng = np.random.default_rng(seed)
  state = {}

  def conv(key, out_ch, in_ch, k):
    state[key] = (rng.standard_normal((out_ch, in_ch, k, k)) * np.sqrt(2.0 / (in_ch * k * k))
                  ).astype(np.float32)

  def bn(prefix, ch):
    state[f"{prefix}.weight"] = rng.uniform(0.5, 1.5, ch).astype(np.float32)
    state[f"{prefix}.bias"] = rng.uniform(-0.2, 0.2, ch).astype(np.float32)
    state[f"{prefix}.running_mean"] = rng.uniform(-0.3, 0.3, ch).astype(np.float32)
    state[f"{prefix}.running_var"] = rng.uniform(0.5, 2.0, ch).astype(np.float32)
    state[f"{prefix}.num_batches_tracked"] = np.array(7, np.int64)

  conv("conv1.weight", base_width, 3, 7)
  bn("bn1", base_width)
  inplanes = base_width
  for s, n in enumerate(blocks_per_stage):
    planes = base_width * 2**s
    width = int(planes * width_per_group / base_width) * groups
    for b in range(n):
      p = f"layer{s + 1}.{b}"
      conv(f"{p}.conv1.weight", width, inplanes, 1)
      bn(f"{p}.bn1", width)
      conv(f"{p}.conv2.weight", width, width // groups, 3)
      bn(f"{p}.bn2", width)
      conv(f"{p}.conv3.weight", planes * 4, width, 1)
      bn(f"{p}.bn3", planes * 4)
      if b == 0:
        conv(f"{p}.downsample.0.weight", planes * 4, inplanes, 1)
        bn(f"{p}.downsample.1", planes * 4)
      inplanes = planes * 4
  state["fc.weight"] = rng.standard_normal((10, inplanes)).astype(np.float32)
  state["fc.bias"] = np.zeros(10, np.float32)
  return state


# ---- NumPy reference of torchvision's forward pass (NCHW, OIHW), inference-mode BN ----

def np_conv(x, w, stride=1, padding=0, groups=1):
  n, c, h, wd = x.shape
  o, i_per_group, kh, kw = w.shape
  x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  oh = (h + 2 * padding - kh) // stride + 1
  ow = (wd + 2 * padding - kw) // stride + 1
  out = np.zeros((n, o, oh, ow), np.float64)
  o_per_group = o // groups
  for g in range(groups):
    xg = x[:, g * i_per_group:(g + 1) * i_per_group]
    wg = w[g * o_per_group:(g + 1) * o_per_group]
    for dy in range(kh):
      for dx in range(kw):
        window = xg[:, :, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride]
        out[:, g * o_per_group:(g + 1) * o_per_group] += np.einsum(
            "nihw,oi->nohw", window, wg[:, :, dy, dx])
  return out


def np_bn(x, state, prefix, eps=1e-5):
  shape = (1, -1, 1, 1)
  mean = state[f"{prefix}.running_mean"].reshape(shape)
  var = state[f"{prefix}.running_var"].reshape(shape)
  return ((x - mean) / np.sqrt(var + eps) * state[f"{prefix}.weight"].reshape(shape)
          + state[f"{prefix}.bias"].reshape(shape))


def np_maxpool_3x3_s2_p1(x):
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  oh = (x.shape[2] - 3) // 2 + 1
  ow = (x.shape[3] - 3) // 2 + 1
  out = np.full(x.shape[:2] + (oh, ow), -np.inf)
  for dy in range(3):
    for dx in range(3):
      out = np.maximum(out, x[:, :, dy:dy + 2 * oh:2, dx:dx + 2 * ow:2])
  return out


def np_resnext_forward(x_nhwc, state, blocks_per_stage, groups):
  relu = lambda t: np.maximum(t, 0.0)
  x = np.transpose(x_nhwc, (0, 3, 1, 2)).astype(np.float64)
  x = relu(np_bn(np_conv(x, state["conv1.weight"], stride=2, padding=3), state, "bn1"))
  x = np_maxpool_3x3_s2_p1(x)
  for s, n in enumerate(blocks_per_stage):
    for b in range(n):
      p = f"layer{s + 1}.{b}"
      stride = 2 if (s > 0 and b == 0) else 1
      y = relu(np_bn(np_conv(x, state[f"{p}.conv1.weight"]), state, f"{p}.bn1"))
      y = relu(np_bn(np_conv(y, state[f"{p}.conv2.weight"], stride, 1, groups), state, f"{p}.bn2"))
      y = np_bn(np_conv(y, state[f"{p}.conv3.weight"]), state, f"{p}.bn3")
      shortcut = x
      if b == 0:
        shortcut = np_bn(np_conv(x, state[f"{p}.downsample.0.weight"], stride), state,
                         f"{p}.downsample.1")
      x = relu(y + shortcut)
  return x.mean(axis=(2, 3))


def tiny_model():
  return resnext.build_resnext(input_size=32, **TINY)


@pytest.fixture(scope="module")
def tiny_state():
  return torchvision_resnext_state_dict(**TINY)


def test_full_size_resnext101_has_torchvision_parameter_count_and_2048_features():
  # torchvision resnext101_32x8d: 88,791,336 parameters, of which fc has 2048*1000 + 1000.
  model = resnext.build_resnext(input_size=32)
  trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
  assert trainable == 88_791_336 - (2048 * 1000 + 1000)
  assert model.output_shape == (None, 2048)


def test_every_variable_lands_where_torchvision_keys_say(tiny_state, tmp_path):
  path = str(tmp_path / "tiny_resnext.safetensors")
  save_file(tiny_state, path)
  model = tiny_model()
  resnext_weights.load_resnext_state_dict(model, path)
  checked = set()
  for key, value in tiny_state.items():
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
      continue
    prefix, param = key.rsplit(".", 1)
    layer = model.get_layer(prefix.replace(".", "_"))
    if param == "weight" and value.ndim == 4:
      variable, expected = layer.kernel, np.transpose(value, (2, 3, 1, 0))
    else:
      variable = {"weight": layer.gamma, "bias": layer.beta, "running_mean": layer.moving_mean,
                  "running_var": layer.moving_variance}[param]
      expected = value
    np.testing.assert_array_equal(variable.numpy(), expected, err_msg=key)
    checked.add(id(variable))
  # Every model variable was checked against exactly one key.
  assert checked == {id(v) for v in model.weights}


def test_forward_pass_matches_numpy_torchvision_reference(tiny_state):
  model = tiny_model()
  resnext_weights.assign_state_dict(model, tiny_state)
  x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
  # The stem conv alone (PyTorch padding 3, stride 2) ...
  stem = model.get_layer("conv1")
  stem_out = stem(model.get_layer("stem_pad")(x)).numpy()
  stem_ref = np_conv(np.transpose(x, (0, 3, 1, 2)).astype(np.float64), tiny_state["conv1.weight"],
                     stride=2, padding=3)
  np.testing.assert_allclose(stem_out, np.transpose(stem_ref, (0, 2, 3, 1)), rtol=1e-4, atol=1e-4)
  # ... and the whole network, grouped convs, strides, shortcuts and BN included.
  out = model(x, training=False).numpy()
  ref = np_resnext_forward(x, tiny_state, TINY["blocks_per_stage"], TINY["groups"])
  assert out.shape == (2, TINY_FEATURE_DIM)
  np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)


def test_missing_key_is_named_and_nothing_is_assigned(tiny_state):
  model = tiny_model()
  before = model.get_layer("conv1").kernel.numpy().copy()
  state = dict(tiny_state)
  del state["layer2.1.bn2.running_var"]
  with pytest.raises(ValueError, match=r"missing key\(s\): layer2\.1\.bn2\.running_var"):
    resnext_weights.assign_state_dict(model, state)
  np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)


def test_unexpected_key_is_named(tiny_state):
  state = dict(tiny_state, **{"layer5.0.conv1.weight": np.zeros((4, 4, 1, 1), np.float32)})
  with pytest.raises(ValueError, match=r"unexpected key\(s\): layer5\.0\.conv1\.weight"):
    resnext_weights.assign_state_dict(tiny_model(), state)


def test_misshaped_key_is_named(tiny_state):
  state = dict(tiny_state)
  # A non-grouped 3x3 kernel where the grouped one belongs (input channels not divided by groups).
  w = state["layer1.0.conv2.weight"]
  state["layer1.0.conv2.weight"] = np.concatenate([w, w], axis=1)
  with pytest.raises(ValueError, match=r"key layer1\.0\.conv2\.weight: shape \[4, 4, 3, 3\]"):
    resnext_weights.assign_state_dict(tiny_model(), state)


def test_extractor_loads_safetensors_from_config_and_freezes_batchnorm(tiny_state, tmp_path):
  path = str(tmp_path / "tiny.safetensors")
  save_file(tiny_state, path)
  config = ModelConfig(backbone="resnext101", backbone_weights=path, feature_dim=TINY_FEATURE_DIM,
                       resnext_blocks_per_stage=TINY["blocks_per_stage"],
                       resnext_groups=TINY["groups"],
                       resnext_width_per_group=TINY["width_per_group"],
                       resnext_base_width=TINY["base_width"])
  extractor = patch_features.build_patch_feature_extractor(config)
  image = np.random.default_rng(2).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
  features = extractor(image, training=True).numpy()
  assert features.shape == (1, 64, TINY_FEATURE_DIM)
  # Frozen: BatchNorm ran on its moving statistics even with training=True, and did not move them.
  np.testing.assert_array_equal(
      extractor.backbone.get_layer("bn1").moving_mean.numpy(), tiny_state["bn1.running_mean"])
  assert not extractor.trainable_variables
  # Patch 9 (row 1, column 1), ImageNet-normalized, through the NumPy reference.
  crop = image[0, 32:64, 32:64].astype(np.float64) / 255.0
  crop = (crop - pixel_normalization.IMAGENET_MEAN) / pixel_normalization.IMAGENET_STD
  ref = np_resnext_forward(crop[None], tiny_state, TINY["blocks_per_stage"], TINY["groups"])
  np.testing.assert_allclose(features[0, 9], ref[0], rtol=1e-3, atol=1e-3)

  # Trainable: the backbone's weights train and BatchNorm updates its statistics in training.
  config.backbone_trainable = True
  trainable = patch_features.build_patch_feature_extractor(config)
  trainable(image, training=True)
  assert len(trainable.trainable_variables) == len(trainable.backbone.trainable_variables) > 0
  assert not np.allclose(trainable.backbone.get_layer("bn1").moving_mean.numpy(),
                         tiny_state["bn1.running_mean"])


def test_feature_dim_mismatch_is_an_error():
  config = ModelConfig(backbone="resnext101", feature_dim=2048,
                       resnext_blocks_per_stage=[1, 1, 1, 1], resnext_groups=2,
                       resnext_width_per_group=2, resnext_base_width=8)
  with pytest.raises(ValueError, match="outputs 256-d features but model.feature_dim is 2048"):
    patch_features.build_patch_feature_extractor(config)


def test_converted_keras_weights_file_gives_the_same_features(tiny_state, tmp_path):
  source = str(tmp_path / "tiny.safetensors")
  save_file(tiny_state, source)
  converted = str(tmp_path / "tiny_resnext.weights.h5")
  resnext_weights.convert_to_keras_weights(source, converted, tiny_model())
  from_h5, from_safetensors = tiny_model(), tiny_model()
  from_h5.load_weights(converted)
  resnext_weights.load_resnext_state_dict(from_safetensors, source)
  for a, b in zip(from_h5.weights, from_safetensors.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
