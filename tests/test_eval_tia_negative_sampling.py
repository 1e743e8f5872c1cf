"""`eval.tia_negative_sampling`: TIA accuracy's negatives chosen apart from training's."""

import os

import pytest

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.evaluation import evaluate


CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")


def config_with(*overrides):
  return experiment_config.load_config(os.path.join(CONFIGS, "toy_linear.yaml"), list(overrides))


def test_empty_follows_training_and_a_value_overrides_it():
  assert evaluate.tia_negative_sampling(config_with("data.negative_sampling=random")) == "random"
  assert evaluate.tia_negative_sampling(config_with(
      "data.negative_sampling=random", "eval.tia_negative_sampling=same_subcategory")) == (
          "same_subcategory")


def test_the_demo_draws_and_scores_random_negatives_as_the_paper():
  demo = experiment_config.load_config(os.path.join(CONFIGS, "toy.yaml"), [])
  assert demo.data.negative_sampling == "random"
  assert evaluate.tia_negative_sampling(demo) == "random"


def test_an_unknown_value_is_named():
  with pytest.raises(ValueError, match="eval.tia_negative_sampling = 'hard'"):
    config_with("eval.tia_negative_sampling=hard")
