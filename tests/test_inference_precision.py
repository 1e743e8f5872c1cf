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
from tensorflow.core.protobuf import saved_model_pb2

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import tokenization
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.modeling import fused_inference
from fashionbert_tf.modeling import inference_precision
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.serving import export
from fashionbert_tf.serving import op_allowlist
from fashionbert_tf.serving import warmup
from fashionbert_tf.utils import inference_settings

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


def test_bfloat16_inference_model_is_the_fused_graph_within_0_01_of_float32(tiny):
  model = inference_precision.inference_model(tiny["model"], tiny["config"].model, "bfloat16")
  assert isinstance(model, fused_inference.FusedScoringModel) and model.precision == "bfloat16"
  ids, mask, types = tiny["inputs"]
  fast = scoring.model_match_probability(model, ids, mask, types, tiny["features"])
  assert fast.dtype == tf.float32
  np.testing.assert_allclose(fast.numpy(), tiny["exact"], atol=0.01)
  assert not np.array_equal(fast.numpy(), tiny["exact"])  # really a different computation
  # The evaluation's scorer takes it like a Keras model (in a tf.function: the fused oneDNN ops;
  # eagerly the GELU runs on the rounded bfloat16 matmul output instead).
  scorer = scoring.KerasPairScorer(model, FEATURE_DIM)
  np.testing.assert_allclose(scorer.match_probability(ids, mask, types, tiny["features"]),
                             tiny["exact"], atol=0.01)


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
    inference_settings.resolve_length_bucket(True, -3)
  assert inference_settings.resolve_length_bucket(True, -1) == 16
  assert inference_settings.resolve_length_bucket(False, None) == 0


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


def _bfloat16_tensors(export_path):
  """(bfloat16 Const nodes of [.., >= 2] shape in the saved functions, bfloat16 variables)."""
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(export_path, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
  constants = [
      node for function in saved_model.meta_graphs[0].graph_def.library.function
      for node in function.node_def
      if node.op == "Const" and node.attr["dtype"].type == tf.bfloat16.as_datatype_enum
      and len(node.attr["value"].tensor.tensor_shape.dim) >= 2]
  reader = tf.train.load_checkpoint(os.path.join(export_path, "variables", "variables"))
  variables = [name for name, dtype in reader.get_variable_to_dtype_map().items()
               if dtype == tf.bfloat16]
  return len(constants), len(variables)


def test_bfloat16_xla_export_is_servable_and_matches_float32(tiny):
  path = export.export_saved_model(tiny["config"], os.path.join(tiny["tmp_dir"], "bf16_xla"),
                                   model=tiny["model"], version=1, precision="bfloat16",
                                   jit_compile=True)
  assert op_allowlist.disallowed_ops(path) == {}
  assert inference_settings.read_inference_settings(path) == {
      "precision": "bfloat16", "jit_compile": True, "length_bucket": 16}
  # Under XLA the fused graph's kernels are bfloat16 variables (XLA would constant-fold
  # constant kernels); without XLA they are constants of the saved functions (below). Either way
  # stored in bfloat16, never cast at a call. 10 matmuls: the patch projection, 4 of layer 0, 5
  # of the last layer.
  assert _bfloat16_tensors(path) == (0, 2 * 10)
  plain = export.export_saved_model(tiny["config"], os.path.join(tiny["tmp_dir"], "bf16"),
                                    model=tiny["model"], version=1, precision="bfloat16")
  assert _bfloat16_tensors(plain) == (10, 10)  # constant kernels, bias variables
  assert op_allowlist.disallowed_ops(plain) == {}
  plain_score = tf.saved_model.load(plain).signatures["score_features"]
  ids, mask, types = tiny["inputs"]
  np.testing.assert_allclose(
      plain_score(input_word_ids=ids, input_mask=mask, input_type_ids=types,
                  patch_features=tiny["features"])["match_probability"].numpy(),
      tiny["exact"], atol=0.01)
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
