"""The optimizer and learning-rate schedule of the paper (section 3.1), from Model Garden.

"Adam optimizer is applied with the learning rate of 2e-5, beta1 = 0.95, beta2 = 0.999, weight
decay of 1e-4, learning rate warmed up at the first 5,000 steps, and then linear decay."

Built with `official.modeling.optimization` (`OptimizationConfig` -> `OptimizerFactory`):
  * optimizer `adamw` = Model Garden's `AdamWeightDecay` (the original BERT AdamW: decoupled weight
    decay `var -= lr * weight_decay * var`), LayerNorm parameters and biases excluded from decay;
  * learning rate: `polynomial` decay with power 1 (linear) from `learning_rate` to 0 at
    `train_steps`, wrapped in a `linear` warm-up from 0 over `warmup_steps` (BERT's schedule).
Gradient clipping is done by the pretrainer on the all-reduced gradient (so it is the same under
any strategy), so the optimizer's own clipping is switched off here.
"""

from official.modeling.optimization import optimizer_factory
from official.modeling.optimization.configs import optimization_config

# Variables whose names match one of these are not weight-decayed (paper 3.1 / BERT practice).
EXCLUDE_FROM_WEIGHT_DECAY = ["LayerNorm", "layer_norm", "layernorm", "bias"]


def optimization_config_from(train_config):
  """The Model Garden `OptimizationConfig` for a `TrainConfig`."""
  warmup_steps = min(train_config.warmup_steps, max(train_config.train_steps - 1, 0))
  params = {
      "optimizer": {
          "type": "adamw",
          "adamw": {
              "beta_1": train_config.beta_1,
              "beta_2": train_config.beta_2,
              "epsilon": train_config.epsilon,
              "weight_decay_rate": train_config.weight_decay,
              "exclude_from_weight_decay": list(EXCLUDE_FROM_WEIGHT_DECAY),
              "gradient_clip_norm": 0.0,
          },
      },
      "learning_rate": {
          "type": "polynomial",
          "polynomial": {
              "initial_learning_rate": train_config.learning_rate,
              "decay_steps": train_config.train_steps,
              "end_learning_rate": 0.0,
              "power": 1.0,
          },
      },
  }
  if warmup_steps > 0:
    params["warmup"] = {
        "type": "linear",
        "linear": {"warmup_steps": warmup_steps, "warmup_learning_rate": 0.0},
    }
  return optimization_config.OptimizationConfig(params)


def build_learning_rate(train_config):
  """The warm-up + linear-decay `LearningRateSchedule` (a function of the optimizer step)."""
  factory = optimizer_factory.OptimizerFactory(optimization_config_from(train_config))
  return factory.build_learning_rate()


def build_optimizer(train_config):
  """AdamW with the paper's settings (a legacy Keras optimizer, as Model Garden's BERT uses).

  Under `mixed_float16` the caller wraps it in `tf_keras.mixed_precision.LossScaleOptimizer`
  (see `strategies.maybe_wrap_for_loss_scaling`).
  """
  factory = optimizer_factory.OptimizerFactory(optimization_config_from(train_config))
  return factory.build_optimizer(factory.build_learning_rate())
