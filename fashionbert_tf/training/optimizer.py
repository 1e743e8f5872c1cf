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

Learning rate of the new layers (`train.new_layers_learning_rate_multiplier`, not in the paper):
the layers FashionBERT adds to the pre-trained BERT (the patch embedding and the MPM and TIA heads)
start from random weights and the pooler (read by TIA alone) was never trained for it
(`FashionBertModel.new_layer_variables`), while the encoder starts from a checkpoint. With a multiplier m != 1 those variables get m x the scheduled learning rate (same
warm-up and decay; the decoupled weight decay scales with it), through `AdamWeightDecayWithMultiplier`,
Model Garden's AdamWeightDecay with the per-variable learning rate applied where it reads its
coefficients. m = 1 is exactly Model Garden's optimizer.
"""

import re

import tensorflow as tf

from official.modeling.optimization import legacy_adamw
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


def variable_key(name):
  """A variable's name without the `:0` suffix and a mirrored replica's `/replica_N` part."""
  return re.sub(r"(/replica_\d+)?(:\d+)?$", "", name)


class AdamWeightDecayWithMultiplier(legacy_adamw.AdamWeightDecay):
  """Model Garden's AdamWeightDecay; the variables named in `multiplied_variables` get
  `learning_rate_multiplier` x the learning rate (Adam step and decoupled weight decay)."""

  def __init__(self, multiplied_variables, learning_rate_multiplier, **kwargs):
    super().__init__(**kwargs)
    self._multiplied = {variable_key(name) for name in multiplied_variables}
    self._learning_rate_multiplier = float(learning_rate_multiplier)

  def _apply_state_for(self, var, apply_state):
    if variable_key(var.name) not in self._multiplied:
      return apply_state
    key = (var.device, var.dtype.base_dtype)
    apply_state = dict(apply_state or {})
    coefficients = dict(apply_state.get(key) or self._fallback_apply_state(*key))
    for name in ("lr_t", "lr"):     # lr_t: the schedule's value; lr: with Adam's bias correction
      coefficients[name] = coefficients[name] * tf.cast(self._learning_rate_multiplier,
                                                        coefficients[name].dtype)
    apply_state[key] = coefficients
    return apply_state

  def _resource_apply_dense(self, grad, var, apply_state=None):
    return super()._resource_apply_dense(grad, var, self._apply_state_for(var, apply_state))

  def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
    return super()._resource_apply_sparse(grad, var, indices,
                                          self._apply_state_for(var, apply_state))

  def get_config(self):
    config = super().get_config()
    config.update(multiplied_variables=sorted(self._multiplied),
                  learning_rate_multiplier=self._learning_rate_multiplier)
    return config


def build_optimizer(train_config, new_layer_variables=()):
  """AdamW with the paper's settings (a legacy Keras optimizer, as Model Garden's BERT uses).

  Args:
    train_config: `TrainConfig`.
    new_layer_variables: the variables `train.new_layers_learning_rate_multiplier` applies to
      (`FashionBertModel.new_layer_variables`); ignored when it is 1.

  Under `mixed_float16` the caller wraps it in `tf_keras.mixed_precision.LossScaleOptimizer`
  (see `strategies.maybe_wrap_for_loss_scaling`).
  """
  factory = optimizer_factory.OptimizerFactory(optimization_config_from(train_config))
  learning_rate = factory.build_learning_rate()
  multiplier = float(train_config.new_layers_learning_rate_multiplier)
  if multiplier == 1.0:
    return factory.build_optimizer(learning_rate)
  # The factory's own construction of `adamw` (optimizer_factory.build_optimizer), subclassed.
  adamw = optimization_config_from(train_config).optimizer.get().as_dict()
  for key in ("clipnorm", "clipvalue", "global_clipnorm"):
    if adamw.get(key) is None:
      adamw.pop(key, None)
  return AdamWeightDecayWithMultiplier(
      multiplied_variables=[variable.name for variable in new_layer_variables],
      learning_rate_multiplier=multiplier, learning_rate=learning_rate, **adamw)
