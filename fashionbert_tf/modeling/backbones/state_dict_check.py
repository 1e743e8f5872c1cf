"""Checks a PyTorch-layout state dict against the keys and shapes a Keras backbone needs."""

import numpy as np


def listed(items, limit=20, separator=", "):
  """'a, b, c' for a short list; the first `limit` and a count for a long one."""
  if len(items) <= limit:
    return separator.join(items)
  return f"{separator.join(items[:limit])}{separator}... ({len(items)} in all)"


def state_dict_problems(needed_shapes, state_dict, ignored=()):
  """Every way `state_dict` does not fit, as messages (empty when it fits).

  Args:
    needed_shapes: dict key -> tuple, the PyTorch shape of each key the model needs.
    state_dict: dict key -> array.
    ignored: keys of `state_dict` that are neither needed nor unexpected (e.g. BatchNorm's
      `num_batches_tracked`, a classifier the model has no head for).

  Returns:
    list of str: the missing keys, the unexpected keys and the mis-shaped keys, each named.
  """
  unexpected = sorted(set(state_dict) - set(needed_shapes) - set(ignored))
  missing = sorted(set(needed_shapes) - set(state_dict))
  problems = []
  if missing:
    problems.append(f"missing key(s): {listed(missing)}")
  if unexpected:
    problems.append(f"unexpected key(s): {listed(unexpected)}")
  misshaped = []
  for key in sorted(set(needed_shapes) & set(state_dict)):
    got = tuple(np.shape(state_dict[key]))
    if got != tuple(needed_shapes[key]):
      misshaped.append(f"key {key}: shape {list(got)} but the model needs "
                       f"{list(needed_shapes[key])}")
  if misshaped:
    problems.append(listed(misshaped, limit=10, separator="; "))
  return problems
