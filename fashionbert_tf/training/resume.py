"""Resuming a run: restore the newest checkpoint of its folder that still reads."""

import os

from absl import logging
import tensorflow as tf


def restore_latest_readable(checkpoint, model_dir):
  """Restores the newest checkpoint of `model_dir` that reads; returns its path (None if none).

  A checkpoint only becomes the latest once written (the `checkpoint` state file is replaced
  atomically after the files), but a file can still be cut short or corrupted later (a full disk,
  a copy that died): such a checkpoint is skipped, with a warning naming it, for the one before.

  Args:
    checkpoint: the run's `tf.train.Checkpoint` (every object it names must be in the file).
    model_dir: the run folder holding `ckpt-N` files and their `checkpoint` state file.

  Raises:
    RuntimeError: there are checkpoints but none can be restored.
  """
  state = tf.train.get_checkpoint_state(model_dir)
  paths = list(state.all_model_checkpoint_paths) if state else []
  if state and state.model_checkpoint_path and state.model_checkpoint_path not in paths:
    paths.append(state.model_checkpoint_path)
  unreadable = []
  for path in reversed(paths):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError) as error:
      message = getattr(error, "message", str(error)).strip().splitlines()[0]
      logging.warning("checkpoint %s cannot be restored (%s)", path, message)
      unreadable.append(os.path.basename(path))
      continue
    if unreadable:
      logging.warning("resuming from %s, the newest readable checkpoint (skipped: %s)", path,
                      ", ".join(unreadable))
    return path
  if unreadable:
    raise RuntimeError(f"no checkpoint in {model_dir} can be restored (tried "
                       f"{', '.join(unreadable)}); move them away to start afresh")
  return None
