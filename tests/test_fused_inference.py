"""The fused inference graph (modeling/fused_inference.py) computes the Keras model's P(match).

Tiny FashionBERTs (hidden 32, 2 heads, linear backbone, D = 12) with weights larger than BERT's
init and non-trivial LayerNorm / patch standardization parameters, so that every piece (the
LayerNorm epsilon included: the embeddings' variance is small) shows in P(match). In float32 the
graph must give the Keras model's numbers up to rounding, in graph mode (where Grappler's
rewrites apply) and eagerly.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.modeling import fused_inference
from fashionbert_tf.modeling import model_builder

FEATURE_DIM = 12
VOCAB_SIZE = 40


def _tiny_model(num_layers, activation, seed):
  config = experiment_config.load_config(None, [
      f"model.encoder_format=none,model.num_layers={num_layers},model.hidden_size=32,"
      "model.num_attention_heads=2,model.intermediate_size=64,model.backbone=linear,"
      f"model.feature_dim={FEATURE_DIM},model.vocab_size={VOCAB_SIZE},"
      f"model.encoder_activation={activation}"])
  tf_keras.utils.set_random_seed(seed)
  model = model_builder.build_fashionbert(config.model)
  rng = np.random.default_rng(seed)
  for variable in model.trainable_variables:
    if len(variable.shape) >= 2 and "embeddings" not in variable.name:
      variable.assign(variable * 4.0)
    elif len(variable.shape) == 1:  # LayerNorm gamma / beta and biases: away from 1 / 0
      variable.assign(variable + rng.normal(0.0, 0.2, size=variable.shape).astype(np.float32))
  model.tia_head.classifier.kernel.assign(model.tia_head.classifier.kernel * 10.0)
  normalization = model.patch_feature_normalization
  normalization.mean.assign(rng.normal(0.0, 0.5, size=[FEATURE_DIM]).astype(np.float32))
  normalization.std.assign(rng.uniform(0.5, 2.0, size=[FEATURE_DIM]).astype(np.float32))
  return model


def _inputs(seed, batch=4, length=14):
  """A batch with text padding (rows of different lengths) and type ids 0 / 1."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, VOCAB_SIZE, size=[batch, length]).astype(np.int32)
  mask = np.ones([batch, length], np.int32)
  for row in range(1, batch):
    mask[row, length - 3 * row:] = 0
  ids[mask == 0] = 0
  types = np.zeros([batch, length], np.int32)
  types[:, length // 2:] = 1
  types[mask == 0] = 0
  features = rng.normal(size=[batch, 64, FEATURE_DIM]).astype(np.float32)
  return ids, mask, types, features


def _graph_scorer(model, signature=None):
  """P(match) in a tf.function: traced per input shape, or once for unknown B and T (the serving
  and evaluation functions' signature; Grappler then sees other graphs: shape ops, no folding)."""
  return tf.function(lambda *args: scoring.model_match_probability(model, *args), autograph=False,
                     input_signature=signature)


@pytest.mark.parametrize("num_layers,activation", [(1, "gelu_approximate"), (2, "gelu"),
                                                   (3, "relu")])
def test_float32_graph_gives_the_keras_model_p_match(num_layers, activation):
  model = _tiny_model(num_layers, activation, seed=num_layers)
  ids, mask, types, features = _inputs(seed=num_layers)
  exact = scoring.model_match_probability(model, ids, mask, types, features).numpy()
  assert np.ptp(exact) > 0.05  # the pairs differ: parity is not vacuous
  fused = fused_inference.FusedScoringModel(model, "float32")
  graph = _graph_scorer(fused)
  np.testing.assert_allclose(graph(ids, mask, types, features).numpy(), exact, atol=2e-5)
  relaxed = _graph_scorer(fused, scoring.text_signature() + [
      scoring.features_signature(FEATURE_DIM)])
  np.testing.assert_allclose(relaxed(ids, mask, types, features).numpy(), exact, atol=2e-5)
  np.testing.assert_allclose(
      scoring.model_match_probability(fused, ids, mask, types, features).numpy(), exact,
      atol=2e-5)
  # VSL: a shorter batch (another T) through the same traced function.
  short = graph(ids[:1, :5], mask[:1, :5], types[:1, :5], features[:1]).numpy()
  np.testing.assert_allclose(short, scoring.model_match_probability(
      model, ids[:1, :5], mask[:1, :5], types[:1, :5], features[:1]).numpy(), atol=2e-5)


def test_bfloat16_graph_is_close_to_float32_and_keeps_p_match_float32():
  model = _tiny_model(2, "gelu_approximate", seed=7)
  ids, mask, types, features = _inputs(seed=7)
  exact = scoring.model_match_probability(model, ids, mask, types, features).numpy()
  fused = fused_inference.FusedScoringModel(model, "bfloat16")
  probability = _graph_scorer(fused)(ids, mask, types, features)
  assert probability.dtype == tf.float32
  np.testing.assert_allclose(probability.numpy(), exact, atol=0.01)
  assert not np.array_equal(probability.numpy(), exact)  # really a bfloat16 computation


def test_weights_are_graph_constants_and_the_source_model_is_unchanged():
  model = _tiny_model(2, "gelu_approximate", seed=3)
  kernel_before = model.encoder.transformer_layers[0]._intermediate_dense.kernel.numpy()  # pylint: disable=protected-access
  fused = fused_inference.FusedScoringModel(model, "bfloat16")
  ids, mask, types, features = _inputs(seed=3)
  function = tf.function(fused.tia_logits, autograph=False)
  graph_def = function.get_concrete_function(ids, mask, types, features).graph.as_graph_def()
  matmul_kernels = [node.input[1] for node in graph_def.node if node.op == "MatMul"]
  ops = {node.name: node for node in graph_def.node}
  # Patch projection; layer 0: Q/K/V, attention output, FFN in, FFN out; the last layer ([CLS]
  # queries only): Q, K/V and the same three; pooler; TIA head.
  assert len(matmul_kernels) == 1 + 4 + 5 + 2
  assert all(ops[name.split(":")[0]].op == "Const" for name in matmul_kernels)
  bfloat16_kernels = [name for name in matmul_kernels
                      if ops[name.split(":")[0]].attr["dtype"].type == tf.bfloat16.as_datatype_enum]
  assert len(bfloat16_kernels) == 1 + 4 + 5  # pooler and TIA head stay float32
  # Biases are variables (a zero bias Const would be folded away with its BiasAdd), one per
  # matmul, in the matmul's dtype; with the word embedding table and the backbone they are all a
  # SavedModel tracks.
  bias_inputs = [node.input[1] for node in graph_def.node if node.op == "BiasAdd"]
  assert len(bias_inputs) == len(matmul_kernels)
  assert all(ops[name.split(":")[0]].op == "ReadVariableOp" for name in bias_inputs)
  assert [v.dtype for v in fused.dense_variables] == [tf.bfloat16] * (1 + 4 + 5) + [tf.float32] * 2
  assert {id(v) for v in fused.variables} == (
      {id(fused.word_embeddings)} | {id(v) for v in fused.dense_variables}
      | {id(v) for v in model.patch_feature_extractor.variables})
  np.testing.assert_array_equal(
      model.encoder.transformer_layers[0]._intermediate_dense.kernel.numpy(), kernel_before)  # pylint: disable=protected-access
  # The backbone is the Keras model's.
  image = tf.zeros([1, 256, 256, 3], tf.uint8)
  np.testing.assert_array_equal(fused.compute_patch_features(image).numpy(),
                                model.compute_patch_features(image).numpy())


def test_refuses_what_it_does_not_reproduce():
  model = _tiny_model(1, "gelu_approximate", seed=1)
  with pytest.raises(ValueError, match="precision 'float16'"):
    fused_inference.FusedScoringModel(model, "float16")
  fused = fused_inference.FusedScoringModel(model, "float32")
  ids, mask, types, features = _inputs(seed=1)
  with pytest.raises(ValueError, match="inference only"):
    fused({"input_word_ids": ids, "input_mask": mask, "input_type_ids": types,
           "patch_features": features}, training=True)
  block = model.encoder.transformer_layers[0]
  block._norm_first = True  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="norm_first"):
    fused_inference.FusedScoringModel(model, "float32")
