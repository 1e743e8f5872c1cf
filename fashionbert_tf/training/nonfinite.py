"""Non-finite steps: the update a NaN / Inf step must not apply, and `train.on_nonfinite`.

In the graph (`apply_gradients_if_finite`): a step whose global loss or all-reduced gradient norm
is NaN / Inf applies no update; only the step count moves on. In the loop (`on_nonfinite_step`):
"stop" raises `NonFiniteLossError` naming the step and its values, "skip_batch" logs the skipped
batch and training goes on.
"""

import math

from absl import logging
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
  """A step's loss or gradient was NaN / Inf under `train.on_nonfinite: stop`."""


def apply_gradients_if_finite(optimizer, gradients, variables, finite):
  """`optimizer.apply_gradients` when `finite`, else only `optimizer.iterations` += 1.

  Called in replica context with gradients already summed over replicas (no second aggregation)
  and `finite` a scalar bool equal on every replica (computed from global values). The cond is
  taken in cross-replica context, as Keras' LossScaleOptimizer does: `apply_gradients` calls
  `merge_call`, which a replica-context cond may not contain.
  """

  def skip():
    return optimizer.iterations.assign_add(1, read_value=False)

  def apply_in_replica(replica_gradients):
    return optimizer.apply_gradients(zip(replica_gradients, variables),
                                     experimental_aggregate_gradients=False)

  def in_cross_replica(distribution, replica_gradients, replica_finite):
    should_apply = distribution.experimental_local_results(replica_finite)[0]
    return tf.__internal__.smart_cond.smart_cond(
        should_apply,
        lambda: distribution.extended.call_for_each_replica(apply_in_replica,
                                                           args=(replica_gradients,)),
        skip)

  tf.distribute.get_replica_context().merge_call(in_cross_replica, args=(gradients, finite))


def on_nonfinite_step(step_values, names, step, on_nonfinite, latest_checkpoint,
                      skipped_batches):
  """Acts on a step whose loss or gradient was NaN / Inf (its update was not applied).

  Args:
    step_values: the step's own values, `step_<name>` for each of `names` (scalars).
    names: which values to name, in this order (e.g. "mlm_loss", ..., "gradient_norm").
    step: the step's number (1-based).
    on_nonfinite: `train.on_nonfinite`, "stop" or "skip_batch".
    latest_checkpoint: the newest checkpoint path (None if none), for the error message.
    skipped_batches: batches skipped so far, this one included.

  Raises:
    NonFiniteLossError: for "stop"; "skip_batch" logs a warning instead.
  """
  values = {name: float(step_values[f"step_{name}"]) for name in names}
  description = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in values.items()
                          if not math.isfinite(value))
  if on_nonfinite == "stop":
    raise NonFiniteLossError(
        f"non-finite values at step {step}: {description} (all values: {values}). The update "
        "was not applied and no checkpoint was written from this step; the latest checkpoint "
        f"is {latest_checkpoint or 'none'}. Look for bad records (NaN features, empty texts) or "
        "lower the learning rate; train.on_nonfinite=skip_batch skips such batches instead.")
  logging.warning("step %d: non-finite values (%s): batch skipped, no update applied (%d "
                  "skipped so far)", step, description, skipped_batches)
