"""Pre-trained BERT loading: HF safetensors, TF-Hub SavedModel, Model Garden checkpoint.

Each source is a tiny BERT written by the test; after loading, FashionBERT's encoder on text alone
must reproduce the source model's outputs (an independent NumPy BERT for the HF layout, the source
Model Garden encoder for TF-Hub and Model Garden). Wrong checkpoints fail naming the variable.
"""

import hashlib
import json
import math
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file
import tensorflow as tf

from official.legacy.bert import configs as legacy_bert_configs
from official.modeling import tf_utils
from official.nlp.modeling import models as bert_models
from official.nlp.modeling import networks
from official.nlp.tools import export_tfhub_lib

from fashionbert_tf.configs.model import ModelConfig
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.modeling.checkpoints import assign
from fashionbert_tf.modeling.checkpoints import canonical_table
from fashionbert_tf.modeling.checkpoints import hf_safetensors
from fashionbert_tf.modeling.checkpoints import tfhub

VOCAB, HIDDEN, HEADS, INNER, LAYERS, POSITIONS = 100, 32, 4, 64, 2, 128
FEATURE_DIM = 16


def model_config(encoder_format, path, **overrides):
  values = dict(backbone="linear", feature_dim=FEATURE_DIM, encoder_format=encoder_format,
                encoder_checkpoint=str(path), num_layers=0)
  values.update(overrides)
  return ModelConfig(**values)


def probe_text():
  ids = np.array([[2, 11, 45, 67, 8, 99, 3], [2, 50, 13, 3, 0, 0, 0]], np.int32)
  mask = (np.arange(7)[None] < np.array([[7], [4]])).astype(np.int32)
  types = np.zeros_like(ids)
  return ids, mask, types


def text_inputs():
  ids, mask, types = probe_text()
  return dict(input_word_ids=tf.constant(ids), input_mask=tf.constant(mask),
              input_type_ids=tf.constant(types))


def assert_close_where_real(actual, expected, atol=1e-4):
  mask = probe_text()[1].astype(bool)
  np.testing.assert_allclose(np.asarray(actual)[mask], np.asarray(expected)[mask], atol=atol)


# ------------------------------------------------------------------------------------------------
# Hugging Face layout + a NumPy reference of Hugging Face's BertModel forward pass.

def write_hf_bert(folder, prefix="bert.", with_heads=True, seed=0, vocab_size=VOCAB):
  """Writes model.safetensors + config.json of a random tiny HF BERT; returns the tensors."""
  rng = np.random.default_rng(seed)
  def w(*shape, scale=0.2):
    return rng.normal(0.0, scale, size=shape).astype(np.float32)
  def ln():
    return (1.0 + w(HIDDEN, scale=0.1)), w(HIDDEN, scale=0.1)

  t = {}
  t["embeddings.word_embeddings.weight"] = w(vocab_size, HIDDEN, scale=0.5)
  t["embeddings.position_embeddings.weight"] = w(POSITIONS, HIDDEN, scale=0.5)
  t["embeddings.token_type_embeddings.weight"] = w(2, HIDDEN, scale=0.5)
  t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"] = ln()
  for i in range(LAYERS):
    p = f"encoder.layer.{i}."
    for name in ("query", "key", "value"):
      t[p + f"attention.self.{name}.weight"] = w(HIDDEN, HIDDEN)
      t[p + f"attention.self.{name}.bias"] = w(HIDDEN)
    t[p + "attention.output.dense.weight"] = w(HIDDEN, HIDDEN)
    t[p + "attention.output.dense.bias"] = w(HIDDEN)
    t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"] = ln()
    t[p + "intermediate.dense.weight"] = w(INNER, HIDDEN)
    t[p + "intermediate.dense.bias"] = w(INNER)
    t[p + "output.dense.weight"] = w(HIDDEN, INNER)
    t[p + "output.dense.bias"] = w(HIDDEN)
    t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"] = ln()
  t["pooler.dense.weight"] = w(HIDDEN, HIDDEN)
  t["pooler.dense.bias"] = w(HIDDEN)
  t = {prefix + k: v for k, v in t.items()}
  if with_heads:
    t["cls.predictions.transform.dense.weight"] = w(HIDDEN, HIDDEN)
    t["cls.predictions.transform.dense.bias"] = w(HIDDEN)
    t["cls.predictions.transform.LayerNorm.weight"], t["cls.predictions.transform.LayerNorm.bias"] = ln()
    t["cls.predictions.bias"] = w(vocab_size)
    t["cls.predictions.decoder.weight"] = t[prefix + "embeddings.word_embeddings.weight"].copy()
    t["cls.seq_relationship.weight"] = w(2, HIDDEN)
    t["cls.seq_relationship.bias"] = w(2)
  os.makedirs(folder, exist_ok=True)
  save_file(t, os.path.join(folder, "model.safetensors"))
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump({"model_type": "bert", "vocab_size": vocab_size, "hidden_size": HIDDEN,
               "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
               "intermediate_size": INNER, "max_position_embeddings": POSITIONS,
               "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12}, f)
  return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in t.items()}


_erf = np.vectorize(math.erf)


def numpy_hf_bert(t, ids, mask, types, num_layers):
  """Hugging Face BertModel (eval mode) in NumPy: returns (sequence_output, pooled_output)."""
  def layer_norm(x, g, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * g + b
  def linear(x, name):
    return x @ t[name + ".weight"].T + t[name + ".bias"]
  x = (t["embeddings.word_embeddings.weight"][ids] +
       t["embeddings.position_embeddings.weight"][np.arange(ids.shape[1])][None] +
       t["embeddings.token_type_embeddings.weight"][types])
  x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
  batch, length, head = ids.shape[0], ids.shape[1], HIDDEN // HEADS
  bias = (1.0 - mask[:, None, None, :]) * -1e9
  for i in range(num_layers):
    p = f"encoder.layer.{i}."
    def heads(y):
      return y.reshape(batch, length, HEADS, head).transpose(0, 2, 1, 3)
    q, k, v = (heads(linear(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head) + bias
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, HIDDEN)
    x = layer_norm(x + linear(context, p + "attention.output.dense"),
                   t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"])
    inner = linear(x, p + "intermediate.dense")
    inner = 0.5 * inner * (1.0 + _erf(inner / math.sqrt(2.0)))  # HF "gelu": exact.
    x = layer_norm(x + linear(inner, p + "output.dense"),
                   t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"])
  pooled = np.tanh(linear(x[:, 0], "pooler.dense"))
  return x, pooled


def test_hf_safetensors_reproduces_the_numpy_bert(tmp_path):
  t = write_hf_bert(tmp_path, prefix="bert.", with_heads=True)
  model = model_builder.build_fashionbert(model_config("hf_safetensors", tmp_path))
  out = model.encoder(text_inputs(), training=False)
  expected_seq, expected_pooled = numpy_hf_bert(t, *probe_text(), num_layers=LAYERS)
  assert_close_where_real(out["sequence_output"], expected_seq)
  np.testing.assert_allclose(out["pooled_output"], expected_pooled, atol=1e-4)
  # Heads: MLM transform and output bias from cls.predictions, TIA from cls.seq_relationship.
  np.testing.assert_allclose(model.mlm_head.dense.kernel.numpy(),
                             t["cls.predictions.transform.dense.weight"].T)
  np.testing.assert_allclose(model.mlm_head.bias.numpy(), t["cls.predictions.bias"])
  np.testing.assert_allclose(model.tia_head.classifier.kernel.numpy(),
                             t["cls.seq_relationship.weight"].T)
  # Tied MLM output matrix = the loaded word embeddings.
  np.testing.assert_allclose(model.mlm_head.embedding_table.numpy(),
                             t["embeddings.word_embeddings.weight"])


def test_hf_first_k_layers_without_prefix_or_heads(tmp_path):
  t = write_hf_bert(tmp_path, prefix="", with_heads=False, seed=1)
  model = model_builder.build_fashionbert(model_config("hf_safetensors", tmp_path, num_layers=1))
  assert len(model.encoder.transformer_layers) == 1
  out = model.encoder(text_inputs(), training=False)
  expected_seq, _ = numpy_hf_bert(t, *probe_text(), num_layers=1)
  assert_close_where_real(out["sequence_output"], expected_seq)
  # Sizes only (for a restore right after): same shapes, weights not loaded.
  shaped = model_builder.build_fashionbert(
      model_config("hf_safetensors", tmp_path, num_layers=1), load_pretrained_weights=False)
  assert [v.shape for v in shaped.variables] == [v.shape for v in model.variables]
  assert not np.allclose(shaped.encoder.get_embedding_table().numpy(),
                         t["embeddings.word_embeddings.weight"])


def test_hf_missing_variable_is_named(tmp_path):
  write_hf_bert(tmp_path)
  path = os.path.join(tmp_path, "model.safetensors")
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  tensors = load_file(path)
  del tensors["bert.encoder.layer.1.attention.self.key.weight"]
  save_file(tensors, path)
  with pytest.raises(canonical_table.CheckpointMismatchError,
                     match=r"missing variable .*encoder\.layer\.1\.attention\.self\.key\.weight"):
    model_builder.build_fashionbert(model_config("hf_safetensors", tmp_path))
  # The first layer alone does not need it.
  model_builder.build_fashionbert(model_config("hf_safetensors", tmp_path, num_layers=1))


def test_hf_misshaped_variable_is_named(tmp_path):
  write_hf_bert(tmp_path)
  path = os.path.join(tmp_path, "model.safetensors")
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  tensors = load_file(path)
  tensors["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros([INNER + 1, HIDDEN],
                                                                       np.float32)
  save_file(tensors, path)
  with pytest.raises(canonical_table.CheckpointMismatchError,
                     match=r"transformer/layer_0/intermediate/kernel.*encoder\.layer\.0\."
                           r"intermediate\.dense\.weight.*shape \[32, 65\]"):
    model_builder.build_fashionbert(model_config("hf_safetensors", tmp_path))


def test_failed_load_assigns_nothing(tmp_path):
  write_hf_bert(tmp_path)
  pretrained = hf_safetensors.read_hf_safetensors(str(tmp_path))
  del pretrained.weights["pooler_transform/kernel"]  # The encoder's last variable.
  model = model_builder.build_model_from_sizes(pretrained.sizes, model_config("none", ""))
  before = [v.numpy().copy() for v in model.variables]
  with pytest.raises(canonical_table.CheckpointMismatchError, match="pooler_transform/kernel"):
    assign.assign_pretrained_bert(model, pretrained)
  for old, variable in zip(before, model.variables):
    np.testing.assert_array_equal(old, variable.numpy())


def test_more_layers_than_the_checkpoint_is_an_error(tmp_path):
  write_hf_bert(tmp_path)
  with pytest.raises(ValueError, match="num_layers=3 .* only 2 layers"):
    model_builder.build_fashionbert(model_config("hf_safetensors", tmp_path, num_layers=3))


# ------------------------------------------------------------------------------------------------
# TF-Hub SavedModel (Model Garden's export) and Model Garden checkpoints.

def randomize(encoder, seed):
  """Gives every variable large random values (so activations and layers matter)."""
  rng = np.random.default_rng(seed)
  for variable in encoder.variables:
    scale = 0.5 if "embeddings" in variable.name else 0.2
    variable.assign(rng.normal(0.0, scale, size=variable.shape).astype(np.float32) +
                    (1.0 if variable.name.endswith("gamma:0") else 0.0))


def tiny_bert_config():
  return legacy_bert_configs.BertConfig(
      vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
      intermediate_size=INNER, max_position_embeddings=POSITIONS, type_vocab_size=2)


def export_tfhub(folder, checkpoint, with_mlm):
  """`export_tfhub_lib.export_model` of the tiny BERT in `checkpoint` into `folder`/hub."""
  vocab = folder / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                             [f"w{i}" for i in range(VOCAB - 5)]))
  export_dir = str(folder / "hub")
  export_tfhub_lib.export_model(export_dir, bert_config=tiny_bert_config(),
                                model_checkpoint_path=checkpoint, with_mlm=with_mlm,
                                vocab_file=str(vocab), do_lower_case=True)
  return export_dir


@pytest.fixture(scope="module")
def tfhub_bert(tmp_path_factory):
  """A tiny BERT exported to a TF-Hub SavedModel by `export_tfhub_lib` (as TF-Hub BERT-base was)."""
  folder = tmp_path_factory.mktemp("tfhub")
  source = export_tfhub_lib.get_bert_encoder(tiny_bert_config())
  randomize(source, seed=2)
  checkpoint = tf.train.Checkpoint(encoder=source).save(str(folder / "source" / "ckpt"))
  export_dir = export_tfhub(folder, checkpoint, with_mlm=False)
  return export_dir, source


def assert_loads_like_the_source(encoder_format, path, expected):
  """All layers reproduce the source's outputs; num_layers=1 reproduces its first layer."""
  model = model_builder.build_fashionbert(model_config(encoder_format, path))
  out = model.encoder(text_inputs(), training=False)
  assert_close_where_real(out["sequence_output"], expected["sequence_output"])
  np.testing.assert_allclose(out["pooled_output"], expected["pooled_output"], atol=1e-4)
  first = model_builder.build_fashionbert(model_config(encoder_format, path, num_layers=1))
  assert_close_where_real(first.encoder(text_inputs(), training=False)["sequence_output"],
                          expected["encoder_outputs"][0])


def test_tfhub_saved_model_reproduces_the_source_encoder(tfhub_bert):
  export_dir, source = tfhub_bert
  assert_loads_like_the_source("tfhub", export_dir, source(text_inputs(), training=False))


def test_tfhub_saved_model_exported_with_mlm_gives_the_mlm_head(tmp_path):
  # TF-Hub BERTs exported `with_mlm` (as bert_en_uncased_L-12_H-768_A-12/4 is) carry the
  # pretraining MLM head in their `mlm` sub-object: its transform, LayerNorm and output bias load
  # into FashionBERT's MLM head (its output matrix is tied to the word embeddings).
  pretrainer = bert_models.BertPretrainerV2(
      encoder_network=export_tfhub_lib.get_bert_encoder(tiny_bert_config()),
      mlm_activation=tf_utils.get_activation("gelu"))
  pretrainer(dict(text_inputs(), masked_lm_positions=tf.constant([[1, 2], [1, 2]])))  # builds
  randomize(pretrainer, seed=4)
  checkpoint = tf.train.Checkpoint(**pretrainer.checkpoint_items).save(str(tmp_path / "ckpt"))
  export_dir = export_tfhub(tmp_path, checkpoint, with_mlm=True)
  model = model_builder.build_fashionbert(model_config("tfhub", export_dir))
  source = pretrainer.masked_lm
  for loaded, expected in ((model.mlm_head.dense.kernel, source.dense.kernel),
                           (model.mlm_head.dense.bias, source.dense.bias),
                           (model.mlm_head.layer_norm.gamma, source.layer_norm.gamma),
                           (model.mlm_head.layer_norm.beta, source.layer_norm.beta),
                           (model.mlm_head.bias, source.bias)):
    np.testing.assert_allclose(loaded.numpy(), expected.numpy())
  np.testing.assert_allclose(model.mlm_head.embedding_table.numpy(),
                             pretrainer.encoder_network.get_embedding_table().numpy())


def test_tfhub_handle_resolves_from_the_tfhub_cache(tfhub_bert, tmp_path, monkeypatch):
  # A handle pre-downloaded into $TFHUB_CACHE_DIR (tensorflow_hub caches it under the SHA-1 of
  # the handle) loads offline, exactly like the SavedModel directory itself.
  export_dir, source = tfhub_bert
  handle = "https://tfhub.dev/fashionbert-tf/tiny_bert_for_tests/1"
  cache = tmp_path / "tfhub_cache"
  monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
  cached = cache / hashlib.sha1(handle.encode("utf-8")).hexdigest()
  shutil.copytree(export_dir, cached)
  assert tfhub.resolve_tfhub_handle(handle) == str(cached)
  assert_loads_like_the_source("tfhub", handle, source(text_inputs(), training=False))


def test_an_uncached_tfhub_handle_offline_says_how_to_predownload_it(tmp_path, monkeypatch):
  monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty_cache"))
  handle = "https://tfhub.invalid/fashionbert-tf/not_cached/1"   # .invalid never resolves
  with pytest.raises(FileNotFoundError, match=r"not in the TF-Hub cache .*Pre-download it"):
    model_builder.build_fashionbert(model_config("tfhub", handle))


def test_tfhub_load_is_verified_against_the_saved_model(tfhub_bert):
  export_dir, _ = tfhub_bert
  with pytest.raises(canonical_table.CheckpointMismatchError, match="does not reproduce"):
    model_builder.build_fashionbert(model_config("tfhub", export_dir, encoder_activation="relu"))


def test_model_garden_checkpoint_loads_first_k_layers(tmp_path):
  source = networks.BertEncoderV2(vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=LAYERS,
                                  num_attention_heads=HEADS, inner_dim=INNER,
                                  max_sequence_length=POSITIONS, type_vocab_size=2)
  source(text_inputs())  # Creates the variables.
  randomize(source, seed=3)
  expected = source(text_inputs())
  tf.train.Checkpoint(encoder=source).save(str(tmp_path / "ckpt"))
  # A directory (the latest checkpoint in it).
  assert_loads_like_the_source("model_garden", tmp_path, expected)


def test_model_garden_checkpoint_missing_variable_is_named(tmp_path):
  source = networks.BertEncoderV2(vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=1,
                                  num_attention_heads=HEADS, inner_dim=INNER,
                                  max_sequence_length=POSITIONS, type_vocab_size=2)
  source(text_inputs())
  kept = [tf.Variable(v.numpy(), name=v.name.split(":")[0]) for v in source.variables
          if "output_layer_norm/gamma" not in v.name]
  prefix = tf.train.Checkpoint(variables=kept).save(str(tmp_path / "ckpt"))
  with pytest.raises(canonical_table.CheckpointMismatchError,
                     match="missing variable 'transformer/layer_0/output_layer_norm/gamma'"):
    model_builder.build_fashionbert(model_config("model_garden", prefix))
