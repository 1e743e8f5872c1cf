"""A warm start (`train.init_checkpoint`): a fresh run's model from another run's checkpoint.

Model Garden's `init_checkpoint` (official/core/base_task.py, `Task.initialize`): used only when the
run folder has no checkpoint of its own to resume, and only for the model. Here:
  * every variable of the model comes from the checkpoint: encoder, patch embedding, the three
    heads, the patch-feature statistics. A variable the checkpoint lacks, or one of another shape,
    is an error naming the checkpoint: its run's `model` section must be the config's;
  * the optimizer (Adam's moments), the step, and with it the learning-rate schedule (warmup
    included), and the early-stopping state start afresh: the run trains `train.train_steps` steps
    and its input starts at the beginning;
  * a run resumed from its own checkpoints ignores `train.init_checkpoint`.
A chain of runs (one data setting, then another: docs/experiments/paper_recipe_demo.md) is a
sequence of warm starts.
"""

from absl import logging
import tensorflow as tf

from fashionbert_tf.evaluation import pretraining_run


class CheckpointMismatchError(ValueError):
  """The init checkpoint does not fit the config's model."""


def resolve(init_checkpoint):
  """The checkpoint prefix `train.init_checkpoint` names (a prefix, or a run folder: its latest).

  Raises:
    FileNotFoundError: no checkpoint there (the message names the option).
  """
  try:
    return pretraining_run.resolve_checkpoint(init_checkpoint)
  except FileNotFoundError as error:
    raise FileNotFoundError(f"train.init_checkpoint={init_checkpoint}: no checkpoint there "
                            "(give a prefix runs/x/ckpt-N, or a run folder)") from error


def restore_model_weights(model, init_checkpoint):
  """Sets every variable of `model` from the checkpoint `init_checkpoint` names; returns its path.

  Raises:
    FileNotFoundError: no checkpoint there.
    CheckpointMismatchError: the checkpoint does not fit the model (a variable missing or of
      another shape).
  """
  path = resolve(init_checkpoint)
  try:
    status = tf.train.Checkpoint(model=model).restore(path).expect_partial()
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as error:
    detail = (getattr(error, "message", None) or str(error)).strip().splitlines()[0]
    raise CheckpointMismatchError(
        f"train.init_checkpoint={path} does not fit this config's model ({detail}); the model "
        "section must be the one its run trained with (its params.yaml)") from error
  logging.info("warm start: the model's weights from %s (the optimizer, step and learning-rate "
               "schedule start afresh)", path)
  return path
