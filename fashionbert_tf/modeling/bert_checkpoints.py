"""Pre-trained BERT weights into the FashionBERT encoder: Hugging Face, TF-Hub, Model Garden.

Paper section 3.1: "We reuse the pre-trained parameters from the 12-layer BERT-base". Three sources:
  hf_safetensors  a Hugging Face BERT `model.safetensors` + its `config.json` (the offline default:
                  MiniLM-L6-H384 from `fashionbert_tf.utils.default_assets` when the path is empty);
  tfhub           a TF-Hub BERT SavedModel (TF2 format, as exported by Model Garden's
                  `official.nlp.tools.export_tfhub_lib`; e.g. bert_en_uncased_L-12_H-768_A-12), a
                  directory or a TF-Hub handle resolved by `tensorflow_hub.resolve` (its cache):
                  weights read by name from its variables checkpoint, and the SavedModel loaded
                  offline with `tf.saved_model.load` to verify the result against its outputs;
  model_garden    a Model Garden TF2 checkpoint (object-based, e.g. `tf.train.Checkpoint(encoder=
                  BertEncoderV2)`, `tf.train.Checkpoint(model=BertEncoder)` from
                  `tf2_bert_encoder_checkpoint_converter` / `tf1_bert_checkpoint_converter_lib`, or
                  a BertPretrainerV2 checkpoint); a checkpoint prefix or a directory (latest).

Every reader turns its source into one table: canonical name -> float32 NumPy array. Canonical names
are Model Garden's BERT variable names without the model prefix, e.g. `word_embeddings/embeddings`,
`transformer/layer_0/self_attention/query/kernel` ([H, heads, H/heads]), `pooler_transform/kernel`,
`cls/predictions/transform/dense/kernel` (MLM head); `nsp/kernel`, `nsp/bias` (next-sentence head,
HF only). The encoder sizes are read from the source (`model_builder.EncoderSizes`).

`assign_pretrained_bert` then checks every variable of the encoder's first k layers (plus
embeddings and pooler) against the table, names the first missing or mis-shaped one in a
`CheckpointMismatchError`, and only when all fit assigns them: never a half-loaded model.
Checkpoint layers beyond k are ignored (the paper's 2/4/6/12-layer variants load the first k).
Heads (when `load_heads`): the MLM transform + output bias load when the checkpoint has the whole MLM
head, else they stay freshly initialized; the TIA classifier starts from the NSP head when present.
For TF-Hub, the loaded encoder is then run against the SavedModel's own outputs on a probe input.
"""

import dataclasses
import json
import os
import re

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.utils import default_assets

_CANONICAL_PATTERN = re.compile(
    r"(?:^|/)("
    r"word_embeddings/embeddings|position_embedding/embeddings|type_embeddings/embeddings|"
    r"embeddings/layer_norm/(?:gamma|beta)|embedding_projection/(?:kernel|bias)|"
    r"transformer/layer_\d+/[^:]+|pooler_transform/(?:kernel|bias)|cls/predictions/[^:]+"
    r")(?::\d+)?$")
_LAYER_PATTERN = re.compile(r"^transformer/layer_(\d+)/")

MLM_HEAD_NAMES = (
    "cls/predictions/transform/dense/kernel",
    "cls/predictions/transform/dense/bias",
    "cls/predictions/transform/LayerNorm/gamma",
    "cls/predictions/transform/LayerNorm/beta",
    "cls/predictions/output_bias/bias",
)
NSP_HEAD_NAMES = ("nsp/kernel", "nsp/bias")

# Model Garden / TF-Hub BERT use the tanh-approximated GELU ("gelu" in Model Garden's configs).
_DEFAULT_TF_ACTIVATION = "gelu_approximate"


class CheckpointMismatchError(ValueError):
  """A pre-trained checkpoint lacks a variable the model needs, or has it in another shape."""


@dataclasses.dataclass
class PretrainedBert:
  """Weights read from a checkpoint, by canonical name, plus the encoder sizes they imply.

  Attributes:
    sizes: `model_builder.EncoderSizes` of the checkpoint (all its layers).
    weights: canonical name -> float32 np.ndarray.
    origins: canonical name -> the name in the source (for error messages).
    source: a description of the source ("hf_safetensors /path/model.safetensors").
    missing: canonical name -> source name of variables the source lacks (reported on use).
    reference_saved_model: for tfhub, the SavedModel directory (to verify the loaded encoder).
  """
  sizes: object
  weights: dict
  origins: dict
  source: str
  missing: dict = dataclasses.field(default_factory=dict)
  reference_saved_model: str = ""


def canonical_name(variable_name):
  """Canonical BERT name of a variable name (`bert_encoder/transformer/layer_0/.../kernel:0` ->
  `transformer/layer_0/.../kernel`), or None when it is not a BERT encoder / MLM head variable."""
  match = _CANONICAL_PATTERN.search(variable_name)
  return match.group(1) if match else None


def _encoder_sizes(**kwargs):
  from fashionbert_tf.modeling import model_builder  # pylint: disable=g-import-not-at-top
  return model_builder.EncoderSizes(**kwargs)


def sizes_from_weights(weights, activation, source):
  """Reads `EncoderSizes` from the shapes of a canonical weight table (TF-Hub, Model Garden).

  The number of attention heads comes from the query kernel's [H, heads, H/heads] shape.
  """
  def shape_of(name):
    if name not in weights:
      raise CheckpointMismatchError(f"{source}: no variable {name!r}: not a BERT encoder checkpoint")
    return weights[name].shape

  vocab_size, embedding_width = shape_of("word_embeddings/embeddings")
  layers = sorted({int(m.group(1)) for m in map(_LAYER_PATTERN.match, weights) if m})
  if not layers:
    raise CheckpointMismatchError(f"{source}: no transformer layers (transformer/layer_N/...)")
  if layers != list(range(len(layers))):
    raise CheckpointMismatchError(f"{source}: transformer layers are not numbered 0..N-1: {layers}")
  hidden_size, num_heads, _ = shape_of("transformer/layer_0/self_attention/query/kernel")
  return _encoder_sizes(
      vocab_size=int(vocab_size),
      hidden_size=int(hidden_size),
      num_layers=len(layers),
      num_attention_heads=int(num_heads),
      intermediate_size=int(shape_of("transformer/layer_0/intermediate/kernel")[1]),
      max_position_embeddings=int(shape_of("position_embedding/embeddings")[0]),
      type_vocab_size=int(shape_of("type_embeddings/embeddings")[0]),
      embedding_width=int(embedding_width),
      activation=activation or _DEFAULT_TF_ACTIVATION)


# ---------------------------------------------------------------------------------------------
# Hugging Face BERT safetensors.

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


def _hf_files(path):
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
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  weights_file, config_file = _hf_files(path)
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

  sizes = _encoder_sizes(
      vocab_size=int(hf_config["vocab_size"]),
      hidden_size=int(hf_config["hidden_size"]),
      num_layers=int(hf_config["num_hidden_layers"]),
      num_attention_heads=num_heads,
      intermediate_size=int(hf_config["intermediate_size"]),
      max_position_embeddings=int(hf_config["max_position_embeddings"]),
      type_vocab_size=int(hf_config.get("type_vocab_size", 2)),
      embedding_width=int(hf_config.get("embedding_size", hf_config["hidden_size"])),
      activation=activation or hf_config.get("hidden_act", "gelu"))
  return PretrainedBert(sizes=sizes, weights=weights, origins=origins, missing=missing,
                        source=f"hf_safetensors {weights_file}")


# ---------------------------------------------------------------------------------------------
# TF-Hub SavedModel.

TFHUB_HANDLE = re.compile(r"^(https?|gs)://")


def resolve_tfhub_handle(handle, timeout_seconds=20):
  """`model.encoder_checkpoint` of the tfhub format -> a local SavedModel directory.

  A local directory is used as it is. A TF-Hub handle (`https://tfhub.dev/...`, a Kaggle Models
  URL, `gs://...tar.gz`) goes through `tensorflow_hub.resolve`, the TF-Hub way: it is taken from
  the TF-Hub cache (`$TFHUB_CACHE_DIR` or `--tfhub_cache_dir`, else the system's temporary folder)
  when it is there, else downloaded into it. When that fails (no network), the error says how to
  pre-download the handle; network calls time out after `timeout_seconds`.
  """
  if os.path.isdir(handle) or not TFHUB_HANDLE.match(handle):
    return handle
  import socket  # pylint: disable=g-import-not-at-top
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  from tensorflow_hub import resolver  # pylint: disable=g-import-not-at-top
  cache_dir = resolver.tfhub_cache_dir(use_temp=True)
  previous_timeout = socket.getdefaulttimeout()
  socket.setdefaulttimeout(timeout_seconds)
  try:
    path = hub.resolve(handle)
  except Exception as error:  # pylint: disable=broad-except
    raise FileNotFoundError(
        f"model.encoder_checkpoint: the TF-Hub handle {handle} is not in the TF-Hub cache "
        f"({cache_dir}) and could not be downloaded ({type(error).__name__}: {error}). "
        "Pre-download it where there is network: `TFHUB_CACHE_DIR=/path/cache python -c "
        f"\"import tensorflow_hub as hub; print(hub.resolve('{handle}'))\"`, copy /path/cache "
        "here and set TFHUB_CACHE_DIR to it (or give the printed SavedModel directory as "
        "model.encoder_checkpoint).") from None
  finally:
    socket.setdefaulttimeout(previous_timeout)
  logging.info("TF-Hub handle %s -> %s", handle, path)
  return path


def read_tfhub_saved_model(path, activation=""):
  """Reads a TF-Hub BERT SavedModel (a directory or a TF-Hub handle) by variable name.

  A handle is resolved to its cached SavedModel directory first (`resolve_tfhub_handle`). The
  weights are read from the SavedModel's variables checkpoint (`<dir>/variables/variables`),
  whose object graph keeps every variable's name; the encoder's come from the model's `variables`,
  the MLM head's from its `mlm` sub-object when it was exported `with_mlm`. The SavedModel itself is
  only loaded (`tf.saved_model.load`, offline) to verify the loaded encoder against its outputs.
  """
  if not path:
    raise ValueError("model.encoder_checkpoint: the tfhub format needs a SavedModel directory "
                     "or a TF-Hub handle")
  path = resolve_tfhub_handle(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"model.encoder_checkpoint: TF-Hub SavedModel directory not found: {path}")
  if not any(os.path.exists(os.path.join(path, n)) for n in ("saved_model.pb", "saved_model.pbtxt")):
    raise FileNotFoundError(f"model.encoder_checkpoint: {path} holds no saved_model.pb")
  source = f"tfhub {path}"
  weights, origins = _read_object_checkpoint(os.path.join(path, "variables", "variables"), source)
  sizes = sizes_from_weights(weights, activation, source)
  return PretrainedBert(sizes=sizes, weights=weights, origins=origins, source=source,
                        reference_saved_model=path)


# ---------------------------------------------------------------------------------------------
# Model Garden TF2 checkpoint.

def _checkpoint_prefix(path):
  if not path:
    raise ValueError("model.encoder_checkpoint: the model_garden format needs a checkpoint path")
  if os.path.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      raise FileNotFoundError(f"model.encoder_checkpoint: no checkpoint in directory {path}")
    return prefix
  if not tf.io.gfile.exists(path + ".index"):
    raise FileNotFoundError(f"model.encoder_checkpoint: checkpoint not found: {path} "
                            f"(no {path}.index)")
  return path


def read_model_garden_checkpoint(path, activation=""):
  """Reads a Model Garden TF2 (object-based) checkpoint.

  Variables are identified by the names they had when saved (the object graph's `full_name`), so
  any object layout holding a Model Garden BERT encoder works: `encoder=BertEncoderV2`,
  `model=BertEncoder`, BertPretrainerV2's items, or a FashionBERT run. Optimizer slots are skipped.
  """
  prefix = _checkpoint_prefix(path)
  source = f"model_garden {prefix}"
  weights, origins = _read_object_checkpoint(prefix, source)
  sizes = sizes_from_weights(weights, activation, source)
  return PretrainedBert(sizes=sizes, weights=weights, origins=origins, source=source)


def _read_object_checkpoint(prefix, source):
  """Canonical weights of an object-based TF2 checkpoint, by the variables' saved names.

  Returns (weights, origins): canonical name -> float32 array / checkpoint key. Optimizer slots
  are skipped.
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import trackable_object_graph_pb2
  reader = tf.train.load_checkpoint(prefix)
  if not reader.has_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"):
    raise CheckpointMismatchError(
        f"{source}: not an object-based TF2 checkpoint; convert TF1 BERT checkpoints with "
        "official.nlp.tools.tf2_bert_encoder_checkpoint_converter first")
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
  weights, origins = {}, {}
  for node in graph.nodes:
    for attribute in node.attributes:
      key = attribute.checkpoint_key
      if attribute.name != "VARIABLE_VALUE" or ".OPTIMIZER_SLOT" in key or key.startswith(
          "optimizer/"):
        continue
      name = canonical_name(attribute.full_name)
      if name is None:
        continue
      if name in weights:
        if origins[name] != key:
          logging.warning("%s: %s and %s both hold %s; using %s", source, origins[name], key, name,
                          origins[name])
        continue
      weights[name] = np.asarray(reader.get_tensor(key), dtype=np.float32)
      origins[name] = key
  if not weights:
    raise CheckpointMismatchError(f"{source}: no BERT encoder variables found")
  return weights, origins


READERS = {
    "hf_safetensors": read_hf_safetensors,
    "tfhub": read_tfhub_saved_model,
    "model_garden": read_model_garden_checkpoint,
}


def read_pretrained_bert(encoder_format, path, activation=""):
  """Reads a pre-trained BERT of `encoder_format` ("hf_safetensors", "tfhub", "model_garden")."""
  if encoder_format not in READERS:
    raise ValueError(f"model.encoder_format: no reader for {encoder_format!r}; expected one of "
                     f"{', '.join(READERS)}")
  return READERS[encoder_format](path, activation=activation)


# ---------------------------------------------------------------------------------------------
# Assignment.

def _describe(pretrained, name):
  origin = pretrained.origins.get(name) or pretrained.missing.get(name)
  return f"{name!r}" + (f" ({origin!r} in the source)" if origin and origin != name else "")


def _check(pretrained, name, variable):
  """The checkpoint value for `variable`, or a CheckpointMismatchError naming it."""
  if name not in pretrained.weights:
    raise CheckpointMismatchError(
        f"{pretrained.source}: missing variable {_describe(pretrained, name)} needed by model "
        f"variable {variable.name}")
  value = pretrained.weights[name]
  if tuple(value.shape) != tuple(variable.shape):
    raise CheckpointMismatchError(
        f"{pretrained.source}: variable {_describe(pretrained, name)} has shape "
        f"{list(value.shape)} but model variable {variable.name} needs {list(variable.shape)}")
  return value


def _head_plan(pretrained, names, variables, head):
  """All of a head's (variable, value) pairs, or [] when the checkpoint has none of them."""
  present = [n for n in names if n in pretrained.weights]
  if not present:
    logging.info("%s has no %s head; it starts freshly initialized", pretrained.source, head)
    return []
  if len(present) != len(names):
    absent = [n for n in names if n not in pretrained.weights]
    raise CheckpointMismatchError(
        f"{pretrained.source}: {head} head is incomplete: missing variable {absent[0]!r}")
  return [(v, _check(pretrained, n, v)) for n, v in zip(names, variables)]


def assign_pretrained_bert(model, pretrained, load_heads=True):
  """Copies `pretrained` into `model` (a built `FashionBertModel`) after checking every variable.

  Raises:
    CheckpointMismatchError: a needed variable is missing or mis-shaped (nothing assigned), or
      (tfhub) the loaded encoder does not reproduce the SavedModel's outputs.
  """
  plan = []
  seen = set()
  for variable in model.encoder.variables:
    if id(variable) in seen:
      continue
    seen.add(id(variable))
    name = canonical_name(variable.name)
    if name is None:
      raise CheckpointMismatchError(f"encoder variable {variable.name} has no BERT checkpoint name")
    plan.append((variable, _check(pretrained, name, variable)))
  if load_heads:
    mlm = model.mlm_head
    plan += _head_plan(pretrained, MLM_HEAD_NAMES,
                       (mlm.dense.kernel, mlm.dense.bias, mlm.layer_norm.gamma,
                        mlm.layer_norm.beta, mlm.bias), "MLM")
    tia = model.tia_head.classifier
    plan += _head_plan(pretrained, NSP_HEAD_NAMES, (tia.kernel, tia.bias), "next-sentence (TIA)")
  for variable, value in plan:
    variable.assign(tf.cast(value, variable.dtype))
  logging.info("Loaded %d variables from %s", len(plan), pretrained.source)
  if pretrained.reference_saved_model:
    verify_against_saved_model(model.encoder, pretrained)


def probe_text_inputs(vocab_size, length=8):
  """A fixed text batch [2, length] (second row half padded) for output comparisons."""
  ids = (np.arange(2 * length, dtype=np.int32).reshape(2, length) * 7 + 1) % vocab_size
  mask = np.ones([2, length], np.int32)
  mask[1, length // 2:] = 0
  ids[1, length // 2:] = 0
  return dict(input_word_ids=tf.constant(ids), input_mask=tf.constant(mask),
              input_type_ids=tf.zeros([2, length], tf.int32))


def verify_against_saved_model(encoder, pretrained):
  """Runs the loaded encoder and the source SavedModel on a probe input; raises on a mismatch.

  Compares our last layer with the source's layer k (`encoder_outputs[k-1]`) at unpadded positions.
  """
  inputs = probe_text_inputs(pretrained.sizes.vocab_size)
  reference = tf.saved_model.load(pretrained.reference_saved_model)(inputs, training=False)
  expected = reference["encoder_outputs"][encoder.num_layers - 1]
  actual = encoder(inputs, training=False)["sequence_output"]
  mask = inputs["input_mask"].numpy().astype(bool)
  diff = float(np.max(np.abs(np.asarray(actual, np.float32)[mask] -
                             np.asarray(expected, np.float32)[mask])))
  tolerance = 1e-3 if encoder.compute_dtype == "float32" else 1e-1
  if not diff <= tolerance:
    raise CheckpointMismatchError(
        f"{pretrained.source}: the loaded encoder does not reproduce the SavedModel's outputs (max "
        f"difference {diff:.3g} > {tolerance}); is model.encoder_activation right (now "
        f"{pretrained.sizes.activation!r})?")
  logging.info("%s: loaded encoder matches the SavedModel (max difference %.3g)", pretrained.source,
               diff)
