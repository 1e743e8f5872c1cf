"""bfloat16 and XLA inference: parity with float32, bfloat16 weights, length buckets, the export.

A tiny FashionBERT (2 layers, hidden 32, linear backbone, D=12, texts up to 48 positions so that
an XLA export has three length buckets: 16, 32, 48). Speed is measured by
tools/benchmark_inference.py, never here.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # pylint: disable=unused-import  (registers the tokenizer ops)
import tf_keras

from fashionbert_tf import experiment_config
from fashionbert_tf.data import tokenization
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.modeling import inference_precision
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.serving import export
from fashionbert_tf.serving import op_allowlist
from fashionbert_tf.serving import warmup

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "black", "white",
         "cotton", "wool", "dress", "shirt", "coat", "long", "short", "sleeve", "##s", "with",
         "collar", "button", "closure", "striped", "navy", "in", "at", "front", ".", ","]
FEATURE_DIM = 12
MAX_TEXT_LENGTH = 48
TEXTS = ["red cotton dress with long sleeves .",
         "navy striped shirt , button closure at front",
         "a white wool coat with collar",
         "black coat",
         " ".join(["blue wool shirt with collar ."] * 5)]  # 32 WordPieces + 2: the 48 bucket


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  tmp_dir = str(tmp_path_factory.mktemp("precision"))
  vocab_file = os.path.join(tmp_dir, "vocab.txt")
  with open(vocab_file, "w", encoding="utf-8") as f:
    f.write("\n".join(VOCAB) + "\n")
  config = experiment_config.load_config(None, [
      "model.encoder_format=none,model.num_layers=2,model.hidden_size=32,"
      "model.num_attention_heads=2,model.intermediate_size=64,model.backbone=linear,"
      f"model.feature_dim={FEATURE_DIM},model.vocab_size={len(VOCAB)},"
      f"data.vocab_file={vocab_file},data.max_text_length={MAX_TEXT_LENGTH}"])
  tf_keras.utils.set_random_seed(5)
  model = model_builder.build_fashionbert(config.model)
  # Weights larger than BERT's init (stddev 0.02) so that P(match) spreads over the pairs (as a
  # trained model's does) and a wrong precision path shows.
  for variable in model.trainable_variables:
    if len(variable.shape) >= 2:
      variable.assign(variable * 4.0)
  model.tia_head.classifier.kernel.assign(model.tia_head.classifier.kernel * 25.0)
  tokenizer = tokenization.build_tokenizer(config.data)
  ids, mask, types = tokenization.text_to_model_inputs(tokenizer, tf.constant(TEXTS),
                                                       MAX_TEXT_LENGTH)
  rng = np.random.default_rng(0)
  features = tf.constant(rng.normal(size=[len(TEXTS), 64, FEATURE_DIM]).astype(np.float32))
  exact = scoring.model_match_probability(model, ids, mask, types, features).numpy()
  return {"config": config, "model": model, "tmp_dir": tmp_dir, "inputs": (ids, mask, types),
          "features": features, "exact": exact}


def test_probabilities_spread(tiny):
  """Sanity of the fixture: the pairs' float32 P(match) differ clearly (else parity is vacuous)."""
  assert np.ptp(tiny["exact"]) > 0.04


def test_bfloat16_copy_stores_weights_in_bfloat16_and_keeps_float32_where_it_matters(tiny):
  policy_before = tf_keras.mixed_precision.global_policy().name
  copy = inference_precision.bfloat16_inference_copy(tiny["model"], tiny["config"].model)
  assert tf_keras.mixed_precision.global_policy().name == policy_before
  layer_0 = copy.encoder.transformer_layers[0]
  attention = layer_0._attention_layer  # pylint: disable=protected-access
  for dense in (attention._query_dense, attention._output_dense,  # pylint: disable=protected-access
                layer_0._intermediate_dense, copy.patch_embedding.projection):  # pylint: disable=protected-access
    assert dense.kernel.dtype == tf.bfloat16 and dense.bias.dtype == tf.bfloat16
    assert all(v.dtype == tf.bfloat16 for v in dense.weights)  # the float32 copies are gone
  assert attention._softmax.compute_dtype == "float32"  # pylint: disable=protected-access
  position_table = copy.encoder._position_embedding_layer._position_embeddings  # pylint: disable=protected-access
  assert position_table.dtype == tf.bfloat16 and not position_table.trainable
  np.testing.assert_array_equal(
      tf.cast(position_table, tf.float32).numpy(),
      tf.cast(tf.cast(tiny["model"].encoder._position_embedding_layer._position_embeddings,  # pylint: disable=protected-access
                      tf.bfloat16), tf.float32).numpy())
  assert layer_0._output_layer_norm.compute_dtype == "float32"  # pylint: disable=protected-access
  assert copy.encoder.pooler_layer.compute_dtype == "float32"
  assert copy.tia_head.classifier.compute_dtype == "float32"
  assert copy.encoder.pooler_layer.kernel.dtype == tf.float32
  # The source model is untouched.
  source_layer = tiny["model"].encoder.transformer_layers[0]
  assert source_layer._intermediate_dense.kernel.dtype == tf.float32  # pylint: disable=protected-access
  # The bfloat16 kernel is the float32 one rounded.
  np.testing.assert_allclose(
      tf.cast(layer_0._intermediate_dense.kernel, tf.float32).numpy(),  # pylint: disable=protected-access
      source_layer._intermediate_dense.kernel.numpy(), rtol=2 ** -7)  # pylint: disable=protected-access

  ids, mask, types = tiny["inputs"]
  fast = scoring.model_match_probability(copy, ids, mask, types, tiny["features"])
  assert fast.dtype == tf.float32
  np.testing.assert_allclose(fast.numpy(), tiny["exact"], atol=0.01)
  assert not np.array_equal(fast.numpy(), tiny["exact"])  # really a different computation


def test_einsum_dense_as_matmul_keeps_p_match_in_float32(tiny):
  """The MatMul forms of the encoder's EinsumDense layers compute the same function."""
  assert inference_precision._matmul_form("abc,cde->abde") == (2, 1)  # pylint: disable=protected-access
  assert inference_precision._matmul_form("abcd,cde->abe") == (2, 2)  # pylint: disable=protected-access
  assert inference_precision._matmul_form("abc,cd->abd") == (2, 1)  # pylint: disable=protected-access
  assert inference_precision._matmul_form("abc,dc->abd") is None  # pylint: disable=protected-access
  assert inference_precision._matmul_form("abc,cd->adb") is None  # pylint: disable=protected-access
  ids, mask, types = tiny["inputs"]
  for batched in (False, True):
    if batched:
      copy = model_builder.build_fashionbert(tiny["config"].model, load_pretrained_weights=False)
      inference_precision._copy_weights(tiny["model"], copy)  # pylint: disable=protected-access
      assert inference_precision.einsum_dense_as_matmul(copy.encoder, batched=True) == 2 * 6
    else:  # what precision=float32 evaluates and exports
      copy = inference_precision.inference_model(tiny["model"], tiny["config"].model, "float32")
      assert copy is not tiny["model"]
    query = copy.encoder.transformer_layers[0]._attention_layer._query_dense  # pylint: disable=protected-access
    assert query.kernel.shape == (32, 32) and query.bias.shape == (32,)
    assert len(copy.encoder.transformer_layers[0].weights) == len(
        tiny["model"].encoder.transformer_layers[0].weights)  # the [in, h, d] kernels are gone
    function = tf.function(lambda *args, model=copy: scoring.model_match_probability(model, *args))
    probability = function(ids, mask, types, tiny["features"]).numpy()
    np.testing.assert_allclose(probability, tiny["exact"], atol=1e-5)
    # VSL: a shorter text batch goes through the same reshapes.
    short = function(ids[:2, :12], mask[:2, :12], types[:2, :12], tiny["features"][:2]).numpy()
    np.testing.assert_allclose(short, scoring.model_match_probability(
        tiny["model"], ids[:2, :12], mask[:2, :12], types[:2, :12], tiny["features"][:2]),
                               atol=1e-5)
    graph_ops = [node.op for node in function.get_concrete_function(
        ids, mask, types, tiny["features"]).graph.as_graph_def().node]
    assert graph_ops.count("Einsum") == 2 * 2  # only attention's QK^T and weights x V remain
    assert graph_ops.count("BatchMatMulV2" if batched else "MatMul") >= 2 * 6


def test_length_buckets():
  assert [scoring.bucketed_length(t, 16, 448) for t in (1, 16, 17, 40, 440, 448)] == [
      16, 16, 32, 48, 448, 448]
  assert scoring.bucketed_length(45, 16, 40) == 45      # never past max(max_length, T)
  assert scoring.bucketed_length(40, 0, 448) == 40      # 0 = no bucketing
  assert int(scoring.bucketed_length(tf.constant(17), 16, 448)) == 32
  assert [scoring.bucketed_batch_size(b) for b in (1, 2, 3, 100, 128)] == [1, 2, 4, 128, 128]
  with pytest.raises(ValueError, match="precision = 'float16'"):
    inference_precision.check_precision("float16")
  assert inference_precision.check_precision("mixed_bfloat16") == "bfloat16"
  with pytest.raises(ValueError, match="length_bucket"):
    export.resolve_length_bucket(True, -3)
  assert export.resolve_length_bucket(True, -1) == 16
  assert export.resolve_length_bucket(False, None) == 0


def test_xla_scorer_with_buckets_matches_float32(tiny):
  """float32 under XLA, texts bucketed and the batch padded to a power of two: same P(match)."""
  scorer = scoring.KerasPairScorer(tiny["model"], FEATURE_DIM, jit_compile=True, length_bucket=16,
                                   max_text_length=MAX_TEXT_LENGTH)
  ids, mask, types = tiny["inputs"]
  probability = scorer.match_probability(ids, mask, types, tiny["features"])  # batch 5 -> 8
  assert probability.shape == (len(TEXTS),)
  np.testing.assert_allclose(probability, tiny["exact"], atol=1e-4)
  # One pair alone (T = its own length, bucketed to 16) gives its score in the batch.
  length = int(mask[0].numpy().sum())
  alone = scorer.match_probability(ids[:1, :length], mask[:1, :length], types[:1, :length],
                                   tiny["features"][:1])
  np.testing.assert_allclose(alone, tiny["exact"][:1], atol=1e-4)


def test_bfloat16_xla_export_is_servable_and_matches_float32(tiny):
  path = export.export_saved_model(tiny["config"], os.path.join(tiny["tmp_dir"], "bf16_xla"),
                                   model=tiny["model"], version=1, precision="bfloat16",
                                   jit_compile=True)
  assert op_allowlist.disallowed_ops(path) == {}
  assert export.read_inference_settings(path) == {
      "precision": "bfloat16", "jit_compile": True, "length_bucket": 16}
  # The weights are saved in bfloat16 (the encoder's kernels), not cast at every call.
  reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
  dtypes = reader.get_variable_to_dtype_map()
  assert sum(dtype == tf.bfloat16 for dtype in dtypes.values()) >= 2 * 6 * 2  # 2 layers x 6 dense
  # The scoring function is marked for XLA in the saved graph.
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    assert b"_XlaMustCompile" in f.read()

  loaded = tf.saved_model.load(path)
  score = loaded.signatures["score_features"]
  ids, mask, types = tiny["inputs"]
  probability = score(input_word_ids=ids, input_mask=mask, input_type_ids=types,
                      patch_features=tiny["features"])["match_probability"].numpy()
  np.testing.assert_allclose(probability, tiny["exact"], atol=0.01)
  # The evaluation's SavedModel scorer pads the batch (5 -> 8) for an XLA export.
  scorer = scoring.SavedModelPairScorer(path)
  assert scorer.jit_compile
  np.testing.assert_allclose(scorer.match_probability(ids, mask, types, tiny["features"]),
                             probability, atol=1e-5)
  # Batch 1 with the text's own length (VSL request; padded to its bucket inside).
  length = int(mask[1].numpy().sum())
  one = score(input_word_ids=ids[1:2, :length], input_mask=mask[1:2, :length],
              input_type_ids=types[1:2, :length], patch_features=tiny["features"][1:2])
  np.testing.assert_allclose(one["match_probability"].numpy(), tiny["exact"][1:2], atol=0.01)

  # Warm-up: the typical request of each signature plus one score_features request per bucket.
  requests = warmup.read_warmup_requests(os.path.join(path, warmup.WARMUP_FILE))
  lengths = sorted(scoring.bucketed_length(inputs["input_word_ids"].shape[1], 16,
                                           MAX_TEXT_LENGTH)
                   for name, inputs in requests if name == "score_features")
  assert lengths == [16, 32, 48]
  for name, inputs in requests:
    outputs = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
    value = outputs["match_probability"].numpy()
    assert value.shape == (1,) and 0.0 <= value[0] <= 1.0


def test_eval_flags_override_the_config():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.cli import inference_flags  # pylint: disable=g-import-not-at-top
  config = experiment_config.load_config(None, [])
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS(["fashionbert", "--precision=bfloat16", "--jit_compile", "--length_bucket=8"])
    inference_flags.apply_to_eval_config(config)
    assert (config.eval.mixed_precision, config.eval.jit_compile, config.eval.length_bucket) == (
        "bfloat16", True, 8)
    assert inference_flags.export_settings() == ("bfloat16", True, 8)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["fashionbert", "--length_bucket=-2"])
    with pytest.raises(ValueError, match="--length_bucket"):
      inference_flags.apply_to_eval_config(config)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["fashionbert"])
    assert inference_flags.export_settings() == ("float32", False, -1)
    unchanged = inference_flags.apply_to_eval_config(experiment_config.load_config(None, []))
    assert (unchanged.eval.mixed_precision, unchanged.eval.jit_compile) == ("float32", False)
  finally:
    flags.FLAGS.unparse_flags()
