"""`FashionBertPretrainer`: the Keras model whose `train_step` is Algorithm 1 of the paper.

One step (paper section 2.2, Algorithm 1):
  1. forward the batch once through the FashionBERT model;
  2. the three losses l_MLM, l_MPM, l_TIA (Eq. 1-3, `losses.py`);
  3. the weights w_i of this batch (Eq. 6, `adaptive_loss.py`), as constants;
  4. one optimizer update with the gradient of sum_i w_i l_i (Eq. 4).

Backward work per mode (`train.loss_weighting`, `train.grad_norm_scope`):
  * fixed, loss_softmax: the weights need no gradient; one backward pass of the weighted sum.
  * grad_norm, scope "shared_variables" (the paper): one backward pass per task over all trainable
    variables (3 instead of 1; the forward pass is shared); g_i comes from the parts of task i's
    gradient that belong to `model.shared_variables`, and the update is sum_i w_i * grad_i of the
    same per-task gradients, so there is no further backward pass.
  * grad_norm, scope "sequence_output" (cheaper): the gradient of each l_i w.r.t. the encoder's last
    layer output only (three backward passes through the small heads), then one backward pass of
    the weighted sum. Needs the heads to read the very `sequence_output` tensor the model returns
    (the model feeds its heads that float32 tensor, also under a mixed policy); otherwise this
    scope raises a clear error.
  The weighted sum's gradient is `tape.gradient(losses [3], variables, output_gradients=w)`, so
  the weights never enter the tape (they are constants, Algorithm 1 step 4).
  * `train.task_gradient_normalization: sequence_output` (any weighting; with grad_norm the
    `sequence_output` scope): the heads read a stop-gradient copy of the encoder output, three
    backward passes through the heads alone give each task's delta_i = d l_i / d sequence_output
    and its heads' gradients, and one backward pass carries
    (sum_j w_j |delta_j|) * sum_i w_i delta_i / |delta_i| through the encoder
    (`_normalized_task_gradients`): every task pushes the shared encoder with the same strength
    before weighting. Not in the paper (see the config's comment and docs/choices.md).

Distribution (Mirrored / MultiWorkerMirrored): every mean's denominator is summed over all
replicas first, so each replica's loss is its share of the *global* batch's loss. The gradients are
all-reduced (summed) before anything else uses them: grad_norm's g_i are computed from the
all-reduced per-task gradients, so every replica gets the same weights, and the update equals the
one-device update on the same global batch. With scope "sequence_output" the per-example activation
gradients of different replicas are disjoint, so the global squared norm is the sum of the
replicas' squared norms (three scalars all-reduced). Clipping (`train.gradient_clip_norm`) acts on
the all-reduced gradient.

Non-finite steps: when any global loss or the all-reduced gradient's norm is NaN / Inf, the
update is not applied (only the step count moves on: `nonfinite.apply_gradients_if_finite`) and
the Means are not updated. Every step also returns its own values, not averaged: `step_finite`
(1 or 0), `step_mlm_loss`, `step_mpm_loss`, `step_tia_loss` and `step_gradient_norm`; the trainer
acts on them (`train.on_nonfinite`).

Metrics (Keras `Mean`s, reset by the caller): loss (the weighted total), mlm_loss, mpm_loss,
tia_loss, weight_mlm, weight_mpm, weight_tia, tia_accuracy, mlm_accuracy; with grad_norm also
g_mlm, g_mpm, g_tia (the normalized squared gradient norms fed to Eq. 6).
`test_step` reports the same losses and accuracies; its `loss` is the plain mean of the three task
losses (w = 1/3 whatever the training mode), so validation losses stay comparable across steps and
can drive early stopping.
"""

import tensorflow as tf
import tf_keras

from fashionbert_tf.training import adaptive_loss
from fashionbert_tf.training import losses as losses_lib
from fashionbert_tf.training import nonfinite

TASKS = adaptive_loss.TASKS  # ("mlm", "mpm", "tia"): the order of every [3] vector here.


def _replica_sum(value):
  """Sum of `value` (a nest of tensors) over all replicas in sync; identity on one replica."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return value
  return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _densify(gradient):
  if isinstance(gradient, tf.IndexedSlices):
    return tf.convert_to_tensor(gradient)
  return gradient


class FashionBertPretrainer(tf_keras.Model):
  """Wraps a `FashionBertModel` with the pre-training step; compile it with the optimizer.

  `pretrainer(batch)` returns the FashionBERT output dict. Build (and compile) it inside the
  distribution strategy's scope.
  """

  def __init__(self, fashionbert, train_config, **kwargs):
    """Args:
      fashionbert: the `FashionBertModel` (contract 5: output dict, `shared_variables`).
      train_config: `TrainConfig` (loss_weighting, grad_norm_scope, grad_norm_normalization,
        masked_losses_on, gradient_clip_norm).
    """
    super().__init__(**kwargs)
    self.fashionbert = fashionbert
    self.loss_weighting = train_config.loss_weighting
    self.grad_norm_scope = train_config.grad_norm_scope
    self.grad_norm_normalization = train_config.grad_norm_normalization
    self.masked_losses_on = train_config.masked_losses_on
    self.fixed_loss_weights = list(train_config.fixed_loss_weights or [])
    self.gradient_clip_norm = float(train_config.gradient_clip_norm)
    self.task_gradient_normalization = train_config.task_gradient_normalization
    if self.loss_weighting not in ("grad_norm", "loss_softmax", "fixed"):
      raise ValueError(f"train.loss_weighting = {self.loss_weighting!r}; expected grad_norm, "
                       "loss_softmax or fixed")
    if self.task_gradient_normalization not in ("none", "sequence_output"):
      raise ValueError(f"train.task_gradient_normalization = "
                       f"{self.task_gradient_normalization!r}; expected none or sequence_output")
    if (self.task_gradient_normalization == "sequence_output" and
        self.loss_weighting == "grad_norm" and self.grad_norm_scope != "sequence_output"):
      raise ValueError("train.task_gradient_normalization = 'sequence_output' needs "
                       "train.grad_norm_scope = 'sequence_output' with grad_norm weighting")
    if self.grad_norm_scope not in ("shared_variables", "sequence_output"):
      raise ValueError(f"train.grad_norm_scope = {self.grad_norm_scope!r}; expected "
                       "shared_variables or sequence_output")
    names = ["loss"] + [f"{task}_loss" for task in TASKS] + [f"weight_{task}" for task in TASKS]
    names += ["tia_accuracy", "mlm_accuracy"]
    if self.loss_weighting == "grad_norm":
      names += [f"g_{task}" for task in TASKS]
    self._trackers = {name: tf_keras.metrics.Mean(name=name) for name in names}
    # This step's own values (reset every step; Means, so replicas' copies reduce to the value).
    step_names = ["step_finite"] + [f"step_{task}_loss" for task in TASKS]
    self._step_trackers = {name: tf_keras.metrics.Mean(name=name)
                           for name in step_names + ["step_gradient_norm"]}

  @property
  def metrics(self):
    return list(self._trackers.values())

  def call(self, inputs, training=None):
    return self.fashionbert(inputs, training=training)

  # ----------------------------------------------------------------------------------------------
  # Losses

  def task_losses(self, batch, outputs):
    """This replica's shares of the global batch's three losses, and accuracy statistics.

    Args:
      batch: the batch dict (contract keys, including the masked_* keys and `tia_label`).
      outputs: the FashionBERT output dict for it.

    Returns:
      (losses float32 [3] in TASKS order, each summing over replicas to the global loss;
       dict of accuracy statistics for the metrics).
    """
    label = batch["tia_label"]
    example_weights = losses_lib.example_weights_for_masked_losses(label, self.masked_losses_on)
    mlm_weights = losses_lib.masked_lm_weights(batch["masked_lm_weights"], example_weights)
    mpm_weights = tf.cast(batch["masked_patch_weights"], tf.float32) * example_weights[:, None]
    # Global denominators (constants): masked positions, masked patches and pairs of all replicas.
    denominators = tf.stop_gradient(_replica_sum(tf.stack([
        tf.reduce_sum(mlm_weights), tf.reduce_sum(mpm_weights),
        tf.cast(tf.shape(label)[0], tf.float32)])))
    mlm = losses_lib.masked_lm_loss(outputs["mlm_logits"], batch["masked_lm_ids"], mlm_weights,
                                    denominators[0])
    mpm = losses_lib.masked_patch_loss(outputs["mpm_logits"], outputs["mpm_targets"], mpm_weights,
                                       denominators[1])
    tia = losses_lib.alignment_loss(outputs["tia_logits"], label, denominators[2])
    statistics = dict(
        tia_correct=losses_lib.alignment_correct(outputs["tia_logits"], label),
        mlm_correct=losses_lib.masked_lm_correct(outputs["mlm_logits"], batch["masked_lm_ids"]),
        mlm_weights=mlm_weights)
    return tf.stack([mlm, mpm, tia]), statistics

  # ----------------------------------------------------------------------------------------------
  # Gradients

  def _scale(self, loss):
    get_scaled_loss = getattr(self.optimizer, "get_scaled_loss", None)
    return get_scaled_loss(loss) if get_scaled_loss is not None else loss

  def _unscale(self, gradients):
    get_unscaled_gradients = getattr(self.optimizer, "get_unscaled_gradients", None)
    if get_unscaled_gradients is None:
      return gradients
    return get_unscaled_gradients(gradients)

  def _weighted_gradients(self, tape, scaled_losses, variables, weights):
    """All-reduced gradient of sum_i w_i l_i: one backward pass."""
    gradients = tape.gradient(scaled_losses, variables, output_gradients=weights,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
    # Dense before the all-reduce: IndexedSlices would be all-gathered with per-replica shapes.
    return _replica_sum([_densify(gradient) for gradient in self._unscale(gradients)])

  def _grad_norm_over_shared_variables(self, tape, scaled_losses, variables):
    """The paper's grad_norm: per-task gradients once, norms on shared parts, then combined."""
    shared_ids = {id(variable) for variable in self.fashionbert.shared_variables}
    is_shared = [id(variable) in shared_ids for variable in variables]
    if not any(is_shared):
      raise ValueError("grad_norm: none of the trainable variables is in model.shared_variables")
    per_task = []
    for index in range(len(TASKS)):
      # d l_index / d variables: the one-hot output gradient selects the task without slicing
      # outside the tape (which would not be recorded).
      gradients = tape.gradient(scaled_losses, variables,
                                output_gradients=tf.one_hot(index, len(TASKS)),
                                unconnected_gradients=tf.UnconnectedGradients.ZERO)
      gradients = [_densify(gradient) for gradient in self._unscale(gradients)]
      per_task.append(_replica_sum(gradients))
    squared_norms = tf.stack([
        adaptive_loss.squared_norm([g for g, shared in zip(gradients, is_shared) if shared])
        for gradients in per_task])
    weights = adaptive_loss.weights_for_mode(
        "grad_norm", squared_norms=squared_norms, normalization=self.grad_norm_normalization)
    combined = [
        weights[0] * per_task[0][k] + weights[1] * per_task[1][k] + weights[2] * per_task[2][k]
        for k in range(len(variables))]
    return combined, weights, squared_norms

  def _task_output_gradients(self, tape, scaled_losses, sequence_output):
    """Per task, d l_i / d sequence_output (backward through the heads alone), and the global
    squared norms [3] of these gradients (summed over replicas: their examples are disjoint)."""
    deltas = []
    for index, task in enumerate(TASKS):
      gradient = tape.gradient(scaled_losses, sequence_output,
                               output_gradients=tf.one_hot(index, len(TASKS)))
      if gradient is None:
        raise ValueError(
            f"grad_norm_scope=sequence_output: the {task} loss does not depend on the model's "
            "`sequence_output` output tensor (the heads must read that very tensor; under a "
            "mixed-precision policy the float32 copy is not it). Use grad_norm_scope="
            "shared_variables.")
      deltas.append(gradient)
    squared_norms = _replica_sum(tf.stack([adaptive_loss.squared_norm([d]) for d in deltas]))
    return deltas, squared_norms

  def _grad_norm_over_sequence_output(self, tape, scaled_losses, sequence_output, variables):
    """The cheaper grad_norm: norms of d l_i / d sequence_output, then one weighted backward."""
    _, squared_norms = self._task_output_gradients(tape, scaled_losses, sequence_output)
    weights = adaptive_loss.weights_for_mode(
        "grad_norm", squared_norms=squared_norms, normalization=self.grad_norm_normalization)
    return self._weighted_gradients(tape, scaled_losses, variables, weights), weights, squared_norms

  def _normalized_task_gradients(self, batch, variables):
    """`task_gradient_normalization: sequence_output`: one step's losses, weights and gradients.

    The heads (pooler included) read a watched stop-gradient copy of the encoder output, so:
      1. per task i, a backward pass through the heads alone gives delta_i = d l_i / d
         sequence_output [B, T+64, H];
      2. the weights w (Eq. 6 on the squared norms of delta_i for grad_norm; else per mode);
      3. delta = (sum_j w_j |delta_j|) * sum_i w_i delta_i / |delta_i|: every task pushes the
         encoder with the same strength before weighting, and the overall scale is the weighted
         mean norm (so clipping and Adam's epsilon see gradients of the usual size);
      4. one backward pass of both `sum_i w_i l_i` (it reaches only the heads' variables and the
         tied word embeddings, through the stop-gradient) and `delta` at the encoder output (the
         encoder and the patch embedding): the update is the sum of the two.
    Norms are global (squared norms summed over replicas); gradients are all-reduced.

    Returns:
      (global losses [3], statistics, gradients, weights [3], squared norms [3]).
    """
    with tf.GradientTape(persistent=True) as tape:
      encoded = self.fashionbert.encode(batch, training=True)
      sequence_output = encoded["sequence_output"]
      head_input = tf.stop_gradient(sequence_output)
      tape.watch(head_input)
      outputs = self.fashionbert.apply_heads(batch, encoded, sequence_output=head_input)
      task_losses, statistics = self.task_losses(batch, outputs)
      scaled_losses = self._scale(task_losses)
    global_losses = tf.stop_gradient(_replica_sum(task_losses))

    # Squared norms in the (possibly loss-scaled) units of the deltas; scale-free where used.
    deltas, squared_norms = self._task_output_gradients(tape, scaled_losses, head_input)
    if self.loss_weighting == "grad_norm":
      weights = adaptive_loss.weights_for_mode(
          "grad_norm", squared_norms=squared_norms, normalization=self.grad_norm_normalization)
    else:
      weights = adaptive_loss.weights_for_mode(self.loss_weighting, losses=global_losses,
                                               fixed=self.fixed_loss_weights)
    norms = tf.sqrt(squared_norms)
    scale = tf.reduce_sum(weights * norms)
    delta = tf.add_n([tf.math.divide_no_nan(weights[i] * scale, norms[i]) * deltas[i]
                      for i in range(len(TASKS))])
    gradients = tape.gradient([scaled_losses, sequence_output], variables,
                              output_gradients=[weights, delta],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
    del tape
    gradients = _replica_sum([_densify(gradient) for gradient in self._unscale(gradients)])
    return global_losses, statistics, gradients, weights, squared_norms

  # ----------------------------------------------------------------------------------------------
  # Keras steps

  def train_step(self, data):
    batch = data
    variables = self.fashionbert.trainable_variables
    if self.task_gradient_normalization == "sequence_output":
      global_losses, statistics, gradients, weights, squared_norms = (
          self._normalized_task_gradients(batch, variables))
      if self.loss_weighting != "grad_norm":
        squared_norms = None
      return self._apply_and_finish(gradients, variables, global_losses, weights, statistics,
                                    squared_norms)

    needs_several_backward_passes = self.loss_weighting == "grad_norm"
    with tf.GradientTape(persistent=needs_several_backward_passes) as tape:
      outputs = self.fashionbert(batch, training=True)
      task_losses, statistics = self.task_losses(batch, outputs)
      scaled_losses = self._scale(task_losses)
    global_losses = tf.stop_gradient(_replica_sum(task_losses))

    squared_norms = None
    if self.loss_weighting == "grad_norm" and self.grad_norm_scope == "shared_variables":
      gradients, weights, squared_norms = self._grad_norm_over_shared_variables(
          tape, scaled_losses, variables)
    elif self.loss_weighting == "grad_norm":
      gradients, weights, squared_norms = self._grad_norm_over_sequence_output(
          tape, scaled_losses, outputs["sequence_output"], variables)
    else:  # fixed, loss_softmax: the weights come from the forward pass alone.
      weights = adaptive_loss.weights_for_mode(self.loss_weighting, losses=global_losses,
                                               fixed=self.fixed_loss_weights)
      gradients = self._weighted_gradients(tape, scaled_losses, variables, weights)
    del tape
    return self._apply_and_finish(gradients, variables, global_losses, weights, statistics,
                                  squared_norms)

  def _apply_and_finish(self, gradients, variables, global_losses, weights, statistics,
                        squared_norms):
    """Applies the all-reduced gradients if the step is finite; metrics and this step's values."""
    gradient_norm = tf.linalg.global_norm(gradients)
    # Global values (losses and gradients are summed over replicas): every replica agrees.
    finite = tf.logical_and(tf.reduce_all(tf.math.is_finite(global_losses)),
                            tf.math.is_finite(gradient_norm))
    if self.gradient_clip_norm > 0:
      gradients, _ = tf.clip_by_global_norm(gradients, self.gradient_clip_norm,
                                            use_norm=gradient_norm)
    nonfinite.apply_gradients_if_finite(self.optimizer, gradients, variables, finite)

    def update_metrics():
      self._update_metrics(global_losses, weights, statistics)
      if squared_norms is not None:
        g = adaptive_loss.normalize_squared_norms(squared_norms, self.grad_norm_normalization)
        for index, task in enumerate(TASKS):
          self._trackers[f"g_{task}"].update_state(g[index])
      return tf.constant(True)

    tf.cond(finite, update_metrics, lambda: tf.constant(False))
    logs = {name: tracker.result() for name, tracker in self._trackers.items()}
    step_values = dict(step_finite=tf.cast(finite, tf.float32), step_gradient_norm=gradient_norm,
                       **{f"step_{task}_loss": global_losses[index]
                          for index, task in enumerate(TASKS)})
    for name, value in step_values.items():
      tracker = self._step_trackers[name]
      for variable in tracker.variables:
        variable.assign(tf.zeros_like(variable))
      tracker.update_state(value)
      logs[name] = tracker.result()
    return logs

  def test_step(self, data):
    batch = data
    outputs = self.fashionbert(batch, training=False)
    task_losses, statistics = self.task_losses(batch, outputs)
    global_losses = _replica_sum(task_losses)
    self._update_metrics(global_losses, adaptive_loss.fixed_weights(), statistics)
    names = ["loss"] + [f"{task}_loss" for task in TASKS] + ["tia_accuracy", "mlm_accuracy"]
    return {name: self._trackers[name].result() for name in names}

  def _update_metrics(self, global_losses, weights, statistics):
    # Losses and weights are global values (identical on every replica); accuracies are updated
    # with each replica's own examples (the Mean's sum and count are summed over replicas).
    self._trackers["loss"].update_state(tf.reduce_sum(weights * global_losses))
    for index, task in enumerate(TASKS):
      self._trackers[f"{task}_loss"].update_state(global_losses[index])
      self._trackers[f"weight_{task}"].update_state(weights[index])
    self._trackers["tia_accuracy"].update_state(statistics["tia_correct"])
    self._trackers["mlm_accuracy"].update_state(statistics["mlm_correct"],
                                                sample_weight=statistics["mlm_weights"])
