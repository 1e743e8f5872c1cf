"""Reads a Hugging Face BERT `model.safetensors` + its `config.json` into the canonical table.

The offline default (an empty path) is MiniLM-L6-H384 from `fashionbert_tf.utils.default_assets`.
"""

import json
import os

from absl import logging
import numpy as np
from safetensors.numpy import load_file

from fashionbert_tf.modeling import encoder_sizes
from fashionbert_tf.modeling.checkpoints import canonical_table
from fashionbert_tf.utils import default_assets

# Per-layer HF names (after `encoder.layer.{i}.`) -> (canonical suffix, conversion kind).
_HF_LAYER_MAP = (
    ("attention.self.query.weight", "self_attention/query/kernel", "qkv_kernel"),
    ("attention.self.query.bias", "self_attention/query/bias", "qkv_bias"),
    ("attention.self.key.weight", "self_attention/key/kernel", "qkv_kernel"),
    ("attention.self.key.bias", "self_attention/key/bias", "qkv_bias"),
    ("attention.self.value.weight", "self_attention/value/kernel", "qkv_kernel"),
    ("attention.self.value.bias", "self_attention/value/bias", "qkv_bias"),
    ("attention.output.dense.weight", "self_attention/attention_output/kernel", "out_kernel"),
    ("attention.output.dense.bias", "self_attention/attention_output/bias", "copy"),
    ("attention.output.LayerNorm.weight", "self_attention_layer_norm/gamma", "copy"),
    ("attention.output.LayerNorm.bias", "self_attention_layer_norm/beta", "copy"),
    ("intermediate.dense.weight", "intermediate/kernel", "transpose"),
    ("intermediate.dense.bias", "intermediate/bias", "copy"),
    ("output.dense.weight", "output/kernel", "transpose"),
    ("output.dense.bias", "output/bias", "copy"),
    ("output.LayerNorm.weight", "output_layer_norm/gamma", "copy"),
    ("output.LayerNorm.bias", "output_layer_norm/beta", "copy"),
)

_HF_GLOBAL_MAP = (
    ("embeddings.word_embeddings.weight", "word_embeddings/embeddings", "copy"),
    ("embeddings.position_embeddings.weight", "position_embedding/embeddings", "copy"),
    ("embeddings.token_type_embeddings.weight", "type_embeddings/embeddings", "copy"),
    ("embeddings.LayerNorm.weight", "embeddings/layer_norm/gamma", "copy"),
    ("embeddings.LayerNorm.bias", "embeddings/layer_norm/beta", "copy"),
    ("pooler.dense.weight", "pooler_transform/kernel", "transpose"),
    ("pooler.dense.bias", "pooler_transform/bias", "copy"),
)

_HF_HEAD_MAP = (
    ("cls.predictions.transform.dense.weight", "cls/predictions/transform/dense/kernel", "transpose"),
    ("cls.predictions.transform.dense.bias", "cls/predictions/transform/dense/bias", "copy"),
    ("cls.predictions.transform.LayerNorm.weight", "cls/predictions/transform/LayerNorm/gamma",
     "copy"),
    ("cls.predictions.transform.LayerNorm.bias", "cls/predictions/transform/LayerNorm/beta", "copy"),
    ("cls.predictions.bias", "cls/predictions/output_bias/bias", "copy"),
    ("cls.seq_relationship.weight", "nsp/kernel", "transpose"),
    ("cls.seq_relationship.bias", "nsp/bias", "copy"),
)


def _convert_hf(array, kind, num_heads):
  """Torch layout -> Model Garden layout. Leaves an array of unexpected size as it is (the shape
  check in `assign_pretrained_bert` then names it)."""
  array = np.asarray(array, dtype=np.float32)
  if kind == "copy":
    return array
  if array.ndim != 2 and kind != "qkv_bias":
    return array
  if kind == "transpose":  # torch Linear weight [out, in] -> Keras kernel [in, out].
    return array.T
  if kind == "qkv_kernel":  # [H_out, H_in] -> [H_in, heads, H/heads].
    if array.shape[0] % num_heads:
      return array
    return array.T.reshape(array.shape[1], num_heads, array.shape[0] // num_heads)
  if kind == "qkv_bias":  # [H] -> [heads, H/heads].
    if array.ndim != 1 or array.shape[0] % num_heads:
      return array
    return array.reshape(num_heads, array.shape[0] // num_heads)
  if kind == "out_kernel":  # [H_out, H_in] -> [heads, H_in/heads, H_out].
    if array.shape[1] % num_heads:
      return array
    return array.T.reshape(num_heads, array.shape[1] // num_heads, array.shape[0])
  raise ValueError(kind)


def hf_files(path):
  """(safetensors file, config.json) for a file, a folder or '' (the MiniLM default)."""
  if not path:
    return default_assets.default_bert_safetensors(), default_assets.default_bert_config_json()
  if os.path.isdir(path):
    weights_file = os.path.join(path, "model.safetensors")
  else:
    weights_file = path
  if not os.path.exists(weights_file):
    raise FileNotFoundError(f"model.encoder_checkpoint: Hugging Face weights not found: {weights_file}")
  config_file = os.path.join(os.path.dirname(os.path.abspath(weights_file)), "config.json")
  if not os.path.exists(config_file):
    raise FileNotFoundError(
        f"model.encoder_checkpoint: {weights_file} needs its Hugging Face config.json next to it "
        f"(encoder sizes); not found: {config_file}")
  return weights_file, config_file


def read_hf_safetensors(path, activation=""):
  """Reads a Hugging Face BERT `.safetensors` (+ `config.json` in the same folder).

  Handles `BertModel` keys (`embeddings.*`, `encoder.layer.N.*`, `pooler.*`) and
  `BertForPreTraining` keys (the same under `bert.`, plus `cls.predictions.*` and
  `cls.seq_relationship.*`); old `LayerNorm.gamma/beta` names too. Torch Linear weights [out, in]
  are transposed; attention weights are split into heads.
  """
  weights_file, config_file = hf_files(path)
  with open(config_file) as f:
    hf_config = json.load(f)
  for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "max_position_embeddings"):
    if key not in hf_config:
      raise ValueError(f"{config_file}: missing {key!r}")
  if hf_config.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"{config_file}: position_embedding_type "
                     f"{hf_config['position_embedding_type']!r} is not supported (only absolute)")
  if abs(float(hf_config.get("layer_norm_eps", 1e-12)) - 1e-12) > 1e-15:
    logging.warning("%s: layer_norm_eps=%s; Model Garden's BERT layers use 1e-12", config_file,
                    hf_config["layer_norm_eps"])
  num_heads = int(hf_config["num_attention_heads"])
  tensors = load_file(weights_file)
  # Older checkpoints name LayerNorm parameters gamma / beta.
  tensors = {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                      "LayerNorm.bias"): v
             for k, v in tensors.items()}
  prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""

  weights, origins, missing = {}, {}, {}

  def take(hf_name, canonical, kind):
    origins[canonical] = hf_name
    if hf_name in tensors:
      weights[canonical] = _convert_hf(tensors[hf_name], kind, num_heads)
    else:
      missing[canonical] = hf_name

  for hf_name, canonical, kind in _HF_GLOBAL_MAP:
    take(prefix + hf_name, canonical, kind)
  for i in range(int(hf_config["num_hidden_layers"])):
    for hf_name, suffix, kind in _HF_LAYER_MAP:
      take(f"{prefix}encoder.layer.{i}.{hf_name}", f"transformer/layer_{i}/{suffix}", kind)
  for hf_name, canonical, kind in _HF_HEAD_MAP:
    take(hf_name, canonical, kind)
  for canonical in list(missing):
    if canonical.startswith(("cls/", "nsp/")):
      del missing[canonical]  # Optional heads.

  sizes = encoder_sizes.EncoderSizes(
      vocab_size=int(hf_config["vocab_size"]),
      hidden_size=int(hf_config["hidden_size"]),
      num_layers=int(hf_config["num_hidden_layers"]),
      num_attention_heads=num_heads,
      intermediate_size=int(hf_config["intermediate_size"]),
      max_position_embeddings=int(hf_config["max_position_embeddings"]),
      type_vocab_size=int(hf_config.get("type_vocab_size", 2)),
      embedding_width=int(hf_config.get("embedding_size", hf_config["hidden_size"])),
      activation=activation or hf_config.get("hidden_act", "gelu"))
  return canonical_table.PretrainedBert(sizes=sizes, weights=weights, origins=origins,
                                        missing=missing, source=f"hf_safetensors {weights_file}")
