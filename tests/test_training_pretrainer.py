"""The pretrainer's train step on a tiny FashionBERT: weights per mode, grad norms, learning."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.training import adaptive_loss
from fashionbert_tf.training import optimizer as optimizer_lib
from fashionbert_tf.training import pretrainer as pretrainer_lib
from fashionbert_tf.training import synthetic

DATA = dict(vocab_size=40, feature_dim=8, num_products=2)


def tiny_config(**train):
  train = dict(dict(learning_rate=1e-3, warmup_steps=0, train_steps=1000, gradient_clip_norm=0.0),
               **train)
  return experiment_config.load_config(None, [{"model": synthetic.tiny_model_overrides(),
                                               "train": train}])


def tiny_pretrainer(**train):
  config = tiny_config(**train)
  tf_keras.utils.set_random_seed(1)
  model = model_builder.build_fashionbert(config.model)
  pretrainer = pretrainer_lib.FashionBertPretrainer(model, config.train)
  pretrainer.compile(optimizer=optimizer_lib.build_optimizer(config.train))
  return pretrainer


def tiny_batch(size=8, seed=0):
  examples = synthetic.synthetic_examples(size, seed=seed, **DATA)
  return {key: tf.constant(value) for key, value in examples.items()}


def separate_task_gradients(pretrainer, batch, variables):
  """Each task's gradient from its own forward pass and tape (the reference)."""
  gradients = []
  for index in range(3):
    with tf.GradientTape() as tape:
      losses, _ = pretrainer.task_losses(batch, pretrainer(batch, training=True))
      loss = losses[index]
    gradients.append([tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v)
                      for g, v in zip(tape.gradient(loss, variables), variables)])
  return gradients


@pytest.mark.parametrize("normalization", ["sum", "max"])
def test_per_task_gradient_norms_equal_separate_tapes(normalization):
  pretrainer = tiny_pretrainer(grad_norm_normalization=normalization)
  batch = tiny_batch()
  variables = pretrainer.fashionbert.trainable_variables
  with tf.GradientTape(persistent=True) as tape:
    losses, _ = pretrainer.task_losses(batch, pretrainer(batch, training=True))
  combined, weights, squared_norms = pretrainer._grad_norm_over_shared_variables(
      tape, losses, variables)

  reference = separate_task_gradients(pretrainer, batch, variables)
  shared = {id(v) for v in pretrainer.fashionbert.shared_variables}
  expected_norms = [sum(float(tf.reduce_sum(tf.square(g))) for g, v in zip(grads, variables)
                        if id(v) in shared) for grads in reference]
  assert all(norm > 0 for norm in expected_norms)
  np.testing.assert_allclose(squared_norms.numpy(), expected_norms, rtol=1e-4)
  s = np.array(expected_norms)
  g = s / (s.sum() if normalization == "sum" else s.max())
  expected_weights = (1 / (3 - g)) / (1 / (3 - g)).sum()
  np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-5)
  # The update is the weighted sum of the same per-task gradients.
  for k in range(len(variables)):
    expected = sum(expected_weights[i] * reference[i][k].numpy() for i in range(3))
    np.testing.assert_allclose(combined[k].numpy(), expected, rtol=1e-3, atol=1e-6)


def test_sequence_output_scope_norms_equal_separate_tapes():
  pretrainer = tiny_pretrainer(grad_norm_scope="sequence_output")
  batch = tiny_batch()
  expected = []
  for index in range(3):
    with tf.GradientTape() as tape:
      outputs = pretrainer(batch, training=True)
      loss = pretrainer.task_losses(batch, outputs)[0][index]
    gradient = tape.gradient(loss, outputs["sequence_output"])
    expected.append(float(tf.reduce_sum(tf.square(gradient))))
  with tf.GradientTape(persistent=True) as tape:
    outputs = pretrainer(batch, training=True)
    losses, _ = pretrainer.task_losses(batch, outputs)
  _, weights, squared_norms = pretrainer._grad_norm_over_sequence_output(
      tape, losses, outputs["sequence_output"], pretrainer.fashionbert.trainable_variables)
  np.testing.assert_allclose(squared_norms.numpy(), expected, rtol=1e-4)
  assert all(value > 0 for value in expected)
  np.testing.assert_allclose(weights.numpy(), adaptive_loss.grad_norm_weights(expected).numpy(),
                             rtol=1e-5)


@pytest.mark.parametrize("mode", ["fixed", "loss_softmax", "grad_norm"])
def test_each_mode_weights_on_a_tiny_model(mode):
  pretrainer = tiny_pretrainer(loss_weighting=mode)
  batch = tiny_batch()
  losses, _ = pretrainer.task_losses(batch, pretrainer(batch, training=True))
  if mode == "fixed":
    expected = [1 / 3] * 3
  elif mode == "loss_softmax":
    softmax = tf.nn.softmax(losses).numpy()
    g = softmax ** 2
    expected = (1 / (3 - g)) / (1 / (3 - g)).sum()
  else:
    reference = separate_task_gradients(pretrainer, batch,
                                        pretrainer.fashionbert.trainable_variables)
    shared = {id(v) for v in pretrainer.fashionbert.shared_variables}
    s = np.array([sum(float(tf.reduce_sum(tf.square(g))) for g, v in zip(
        grads, pretrainer.fashionbert.trainable_variables) if id(v) in shared)
                  for grads in reference])
    g = s / s.sum()
    expected = (1 / (3 - g)) / (1 / (3 - g)).sum()
  before = [v.numpy().copy() for v in pretrainer.fashionbert.trainable_variables]
  logs = pretrainer.train_step(batch)
  weights = [float(logs[f"weight_{task}"]) for task in ("mlm", "mpm", "tia")]
  np.testing.assert_allclose(weights, expected, rtol=1e-4)
  assert abs(sum(weights) - 1) < 1e-5
  np.testing.assert_allclose([float(logs[f"{t}_loss"]) for t in ("mlm", "mpm", "tia")],
                             losses.numpy(), rtol=1e-5)
  total = float(logs["loss"])
  assert abs(total - float(np.dot(weights, losses.numpy()))) < 1e-4
  # Attention key biases have an exactly zero gradient (softmax is shift invariant); every other
  # trainable variable moves in one update.
  unchanged = [v.name for b, v in zip(before, pretrainer.fashionbert.trainable_variables)
               if np.allclose(b, v.numpy()) and "/key/bias" not in v.name]
  assert not unchanged, f"not updated: {unchanged}"
  assert int(pretrainer.optimizer.iterations.numpy()) == 1
  if mode != "grad_norm":
    assert "g_mlm" not in logs


def test_fixed_loss_weights_train_only_the_weighted_task():
  # [0, 0, 1]: only TIA's gradient reaches the update, so the MLM head (MLM's alone) does not
  # move (beyond weight decay, lr * 1e-4 relative); Adam's first step moves a weight by ~lr.
  pretrainer = tiny_pretrainer(loss_weighting="fixed", fixed_loss_weights=[0.0, 0.0, 1.0])
  batch = tiny_batch()
  encoder_ids = {id(v) for v in pretrainer.fashionbert.encoder.trainable_variables}
  # The MLM head's own variables (its output matrix is the encoder's word embeddings, tied).
  mlm_head = [v for v in pretrainer.fashionbert.mlm_head.trainable_variables
              if id(v) not in encoder_ids]
  assert mlm_head
  tia_head = pretrainer.fashionbert.tia_head.trainable_variables
  mlm_before = [v.numpy().copy() for v in mlm_head]
  tia_before = [v.numpy().copy() for v in tia_head]
  logs = pretrainer.train_step(batch)
  assert [float(logs[f"weight_{t}"]) for t in ("mlm", "mpm", "tia")] == [0.0, 0.0, 1.0]
  for before, variable in zip(mlm_before, mlm_head):
    np.testing.assert_allclose(variable.numpy(), before, rtol=1e-5, atol=1e-8)
  assert any(not np.allclose(b, v.numpy()) for b, v in zip(tia_before, tia_head))


def test_a_few_steps_of_pretraining_lower_every_loss():
  # The paper's mode with the cheaper gradient-norm scope (the full scope's weights are checked
  # above); a pool of 2 products the tiny model can memorize.
  pretrainer = tiny_pretrainer(loss_weighting="grad_norm", grad_norm_scope="sequence_output",
                               learning_rate=2e-3)
  dataset = synthetic.synthetic_dataset(16, num_examples=64, **DATA)
  history = pretrainer.fit(dataset, steps_per_epoch=15, epochs=4, verbose=0).history
  for name in ("mlm_loss", "mpm_loss", "tia_loss"):
    first, last = history[name][0], history[name][-1]
    assert last < first - 0.01, f"{name} went from {first} to {last}"
  assert history["mlm_accuracy"][-1] > history["mlm_accuracy"][0]
  assert history["tia_accuracy"][-1] > 0.55


@pytest.mark.parametrize("mode,scope", [("fixed", "shared_variables"),
                                        ("grad_norm", "shared_variables"),
                                        ("grad_norm", "sequence_output")])
def test_mixed_float16_step_with_loss_scaling(mode, scope):
  from fashionbert_tf.training import strategies  # pylint: disable=g-import-not-at-top
  config = tiny_config(loss_weighting=mode, grad_norm_scope=scope,
                       mixed_precision="mixed_float16")
  try:
    strategies.set_precision_policy(config.train)
    tf_keras.utils.set_random_seed(1)
    model = model_builder.build_fashionbert(config.model)
    pretrainer = pretrainer_lib.FashionBertPretrainer(model, config.train)
    optimizer = strategies.maybe_wrap_for_loss_scaling(
        optimizer_lib.build_optimizer(config.train), config.train)
    pretrainer.compile(optimizer=optimizer)
    assert isinstance(pretrainer.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    logs = pretrainer.train_step(tiny_batch())
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")
  values = {name: float(value) for name, value in logs.items()}
  assert all(np.isfinite(value) for value in values.values()), values
  assert abs(values["weight_mlm"] + values["weight_mpm"] + values["weight_tia"] - 1) < 1e-5
  assert int(pretrainer.optimizer.iterations.numpy()) == 1


def _task_gradients(pretrainer, batch, variables, index, through_encoder):
  """Task `index`'s gradient: full (through the encoder) or of the heads alone."""
  model = pretrainer.fashionbert
  with tf.GradientTape() as tape:
    encoded = model.encode(batch, training=True)
    sequence_output = encoded["sequence_output"]
    if not through_encoder:
      sequence_output = tf.stop_gradient(sequence_output)
    tape.watch(sequence_output)
    outputs = model.apply_heads(batch, encoded, sequence_output=sequence_output)
    loss = pretrainer.task_losses(batch, outputs)[0][index]
  gradients = tape.gradient(loss, [sequence_output] + variables,
                            unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return gradients[0], [tf.convert_to_tensor(g) for g in gradients[1:]]


@pytest.mark.parametrize("weighting", ["grad_norm", "fixed"])
def test_task_gradient_normalization_equalizes_tasks_at_the_encoder_output(weighting):
  """delta = sum_i w_i * scale * delta_i / |delta_i| goes into the encoder; heads keep their own.

  Reference from separate tapes: the heads-only gradient h_i (encoder output stop-gradient) and the
  full gradient f_i of each task; the encoder part of task i is f_i - h_i, so the expected update
  is sum_i w_i (h_i + scale / |delta_i| (f_i - h_i)).
  """
  pretrainer = tiny_pretrainer(loss_weighting=weighting, grad_norm_scope="sequence_output",
                               task_gradient_normalization="sequence_output")
  batch = tiny_batch()
  variables = pretrainer.fashionbert.trainable_variables
  _, _, gradients, weights, squared_norms = pretrainer._normalized_task_gradients(
      batch, variables)

  deltas, heads, full = [], [], []
  for index in range(3):
    delta, head = _task_gradients(pretrainer, batch, variables, index, through_encoder=False)
    _, whole = _task_gradients(pretrainer, batch, variables, index, through_encoder=True)
    deltas.append(delta), heads.append(head), full.append(whole)
  norms = np.array([float(tf.norm(delta)) for delta in deltas])
  assert norms.min() > 0 and norms.max() / norms.min() > 2  # the tasks do differ in strength
  np.testing.assert_allclose(squared_norms.numpy(), norms ** 2, rtol=1e-4)
  if weighting == "grad_norm":
    g = norms ** 2 / (norms ** 2).sum()
    expected_weights = (1 / (3 - g)) / (1 / (3 - g)).sum()
  else:
    expected_weights = np.full(3, 1 / 3)
  np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-5)
  scale = float((expected_weights * norms).sum())
  for k in range(len(variables)):
    expected = sum(expected_weights[i] * (heads[i][k].numpy() + scale / norms[i] *
                                          (full[i][k].numpy() - heads[i][k].numpy()))
                   for i in range(3))
    np.testing.assert_allclose(gradients[k].numpy(), expected, rtol=2e-3, atol=1e-6)
  # The encoder receives every task with the same strength: the TIA part of its gradient is no
  # longer the smallest by the ratio of the raw norms.
  assert not np.allclose(gradients[0].numpy(), sum(
      expected_weights[i] * full[i][0].numpy() for i in range(3)), rtol=1e-2, atol=1e-7)


def test_task_gradient_normalization_trains():
  pretrainer = tiny_pretrainer(task_gradient_normalization="sequence_output",
                               grad_norm_scope="sequence_output")
  batch = tiny_batch()
  first = pretrainer.train_step(batch)
  for _ in range(20):
    logs = pretrainer.train_step(batch)
  assert float(logs["loss"]) < float(first["loss"])
  assert 0 < float(logs["weight_tia"]) < 1 and float(logs["g_mlm"]) > 0


def test_task_gradient_normalization_needs_the_sequence_output_scope():
  config = tiny_config(task_gradient_normalization="sequence_output",
                       grad_norm_scope="shared_variables")
  with pytest.raises(ValueError, match="train.grad_norm_scope"):
    config.train.validate()
  with pytest.raises(ValueError, match="grad_norm_scope"):
    pretrainer_lib.FashionBertPretrainer(None, config.train)
