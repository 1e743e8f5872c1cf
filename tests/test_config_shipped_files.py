"""Every YAML file in configs/ loads and validates, and its `model.feature_dim` is the size of the
patch features its backbone (and colour histogram) gives, so no shipped config fails at model
build time."""

import glob
import os

import pytest

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.modeling import patch_features

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.yaml")))
# The paper's CNNs (ResNeXt-101, InceptionV3) take seconds to build: their sizes are tested in
# tests/test_backbone_resnext.py and tests/test_backbone_inception.py.
HEAVY_BACKBONES = {"resnext101", "inception_v3"}


def test_configs_folder_is_found():
  assert len(SHIPPED) >= 2, f"no configs found under {REPO_ROOT}/configs"


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_config_loads_and_validates(path):
  config = experiment_config.load_config(path)
  assert config.model.feature_dim > 0


def _light_configs():
  """The shipped configs whose patch feature extractor builds in well under a second."""
  return [path for path in SHIPPED
          if experiment_config.load_config(path).model.backbone not in HEAVY_BACKBONES]


@pytest.mark.parametrize("path", _light_configs(), ids=os.path.basename)
def test_shipped_config_feature_dim_matches_its_extractor(path):
  config = experiment_config.load_config(path)
  extractor = patch_features.build_patch_feature_extractor(config.model, load_weights=False)
  assert int(extractor.feature_dim) == config.model.feature_dim
