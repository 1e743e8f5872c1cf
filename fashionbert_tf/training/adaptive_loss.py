"""The adaptive loss weights of FashionBERT (paper section 2.2, Eq. 4-6, Algorithm 1, appendix).

The total loss is L(theta) = sum_i w_i * l_i(theta) (Eq. 4) over the L = 3 tasks (MLM, MPM, TIA).
Solving Eq. 5 (maximise the weighted gradient magnitude while keeping the weights close to each
other, sum w_i = 1) with the KKT conditions gives Eq. 6:

    w_i = (L - g_i)^-1 / sum_j (L - g_j)^-1,        g_i = |grad l_i|^2 in [0, 1].

`loss_weights(g)` is Eq. 6. Three modes produce g, each one code path (`weights_for_mode`):

  * `grad_norm`    (the paper): s_i = squared norm of task i's gradient over the parameters all
                   tasks share (or, with `grad_norm_scope: sequence_output`, over the encoder's last
                   layer output), normalized into [0, 1] by `normalize_squared_norms` (the paper does
                   not say how: "sum" divides by sum_j s_j, "max" by max_j s_j; config option
                   `train.grad_norm_normalization`).
  * `loss_softmax` (the authors' public code): g = softmax(losses)^2.
  * `fixed`        (the paper's ablation, Figure 3): w_i = 1 / L.

The weights are recomputed every batch and used as constants (`tf.stop_gradient`): the optimizer
update never differentiates through them (Algorithm 1, step 4-6). Every function here returns finite
weights that sum to 1 for any input, including zero, huge (inf) and NaN gradients or losses.
"""

import tensorflow as tf

from fashionbert_tf.configs import train as train_config_lib

TASKS = train_config_lib.TASKS


def loss_weights(g):
  """Paper Eq. 6: w_i = (L - g_i)^-1 / sum_j (L - g_j)^-1.

  Args:
    g: float [L], the normalized per-task values, expected in [0, 1]. Values outside are clipped
      into [0, 1] and NaN is read as 0, so the result is always finite (the appendix's non-negativity
      argument needs g_i in [0, 1]).

  Returns:
    float32 [L] positive weights summing to 1; a larger g_i gives a larger w_i (for L = 3 each
    weight lies in [1/4, 3/7]).
  """
  g = tf.convert_to_tensor(g, tf.float32)
  num_tasks = g.shape[0]
  if num_tasks is None:
    raise ValueError("loss_weights needs a statically known number of tasks L")
  if num_tasks == 1:
    return tf.ones([1], tf.float32)
  g = tf.where(tf.math.is_nan(g), tf.zeros_like(g), g)
  g = tf.clip_by_value(g, 0.0, 1.0)
  # L - g_i >= L - 1 >= 1, so the inverse is finite and positive.
  inverse = 1.0 / (float(num_tasks) - g)
  return tf.stop_gradient(inverse / tf.reduce_sum(inverse))


def fixed_weights(num_tasks=len(TASKS)):
  """The paper's ablation without adaptive loss (section 3.4): w_i = 1 / L. float32 [L]."""
  return tf.fill([num_tasks], 1.0 / num_tasks)


def loss_softmax_weights(losses):
  """The authors' public code: g = softmax(losses)^2, then Eq. 6.

  Args:
    losses: float [L], the current batch's task losses. NaN and +inf are read as the largest float
      (the broken task takes all of the softmax mass), -inf as the smallest.

  Returns:
    float32 [L] weights summing to 1.
  """
  losses = tf.stop_gradient(tf.cast(losses, tf.float32))
  largest = tf.float32.max
  losses = tf.where(tf.math.is_nan(losses), largest * tf.ones_like(losses), losses)
  losses = tf.clip_by_value(losses, -largest, largest)
  return loss_weights(tf.square(tf.nn.softmax(losses)))


def normalize_squared_norms(squared_norms, normalization="sum"):
  """Maps per-task squared gradient norms s_i >= 0 to g_i in [0, 1].

  The paper (Eq. 6 and appendix: "when grad l_i in [0, 1]") needs normalized gradients but does
  not say how they are normalized. Choices (`train.grad_norm_normalization`):
    "sum": g_i = s_i / sum_j s_j  (g sums to 1; the default),
    "max": g_i = s_i / max_j s_j  (the task with the largest gradient gets g = 1).
  Both are invariant to a common scale of the gradients (so loss scaling under mixed precision does
  not change them). Computed scale-safely: s is divided by its max before summing, so finite
  huge values do not overflow. Extremes: all zero -> g = 0 (so w = 1/L); any +inf -> the infinite
  entries count as equal maxima and every finite one as 0; NaN -> 0.

  Args:
    squared_norms: float [L], s_i >= 0.
    normalization: "sum" or "max".

  Returns:
    float32 [L] in [0, 1].
  """
  s = tf.stop_gradient(tf.cast(squared_norms, tf.float32))
  s = tf.where(tf.math.is_nan(s), tf.zeros_like(s), tf.maximum(s, 0.0))
  is_inf = tf.math.is_inf(s)
  s = tf.where(tf.reduce_any(is_inf), tf.cast(is_inf, tf.float32), s)
  relative = tf.math.divide_no_nan(s, tf.reduce_max(s))  # in [0, 1], max entry 1 (or all 0)
  if normalization == "sum":
    return tf.math.divide_no_nan(relative, tf.reduce_sum(relative))
  if normalization == "max":
    return relative
  raise ValueError(f"grad_norm normalization must be 'sum' or 'max', got {normalization!r}")


def grad_norm_weights(squared_norms, normalization="sum"):
  """The paper's adaptive weights: Eq. 6 on the normalized squared gradient norms. float32 [L]."""
  return loss_weights(normalize_squared_norms(squared_norms, normalization))


def squared_norm(tensors):
  """Sum of squares of every entry of a list of gradients (None skipped). float32 scalar.

  `tf.IndexedSlices` (embedding-lookup gradients) are densified first: their `values` may repeat
  an index, and the norm must be that of the summed (dense) gradient.
  """
  total = tf.constant(0.0, tf.float32)
  for tensor in tensors:
    if tensor is None:
      continue
    if isinstance(tensor, tf.IndexedSlices):
      tensor = tf.convert_to_tensor(tensor)
    total += tf.reduce_sum(tf.square(tf.cast(tensor, tf.float32)))
  return total


def weights_for_mode(mode, losses=None, squared_norms=None, normalization="sum",
                     fixed=None):
  """The weights of one batch for `train.loss_weighting` = `mode`.

  Args:
    mode: "fixed", "loss_softmax" or "grad_norm".
    losses: float [L] task losses (needed by "loss_softmax").
    squared_norms: float [L] per-task squared gradient norms (needed by "grad_norm").
    normalization: see `normalize_squared_norms`.
    fixed: optional [L] weights for "fixed" (`train.fixed_loss_weights`); None or empty = 1 / L.

  Returns:
    float32 [L] weights summing to 1 (those of `fixed` as given), as constants.
  """
  if mode == "fixed":
    if fixed:
      return tf.constant(train_config_lib.fixed_loss_weights_checked(fixed), tf.float32)
    return fixed_weights()
  if mode == "loss_softmax":
    if losses is None:
      raise ValueError("loss_softmax weighting needs the task losses")
    return loss_softmax_weights(losses)
  if mode == "grad_norm":
    if squared_norms is None:
      raise ValueError("grad_norm weighting needs the per-task squared gradient norms")
    return grad_norm_weights(squared_norms, normalization)
  raise ValueError(f"unknown loss weighting {mode!r}; expected grad_norm, loss_softmax or fixed")
