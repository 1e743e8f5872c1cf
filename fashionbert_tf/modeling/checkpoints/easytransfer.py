"""Reads the authors' released FashionBERT (EasyTransfer, TF1 checkpoint) into our model.

The checkpoint (`fashionbert_pretrain_model_fin/model.ckpt-54198`, EasyTransfer
`ImageBertPreTrainedModel`) is read by variable name with `tf.train.load_checkpoint`; no TF1 graph
is built. Its names, with or without the model's own scope (`image_bert_pre_trained_model/`, which
a TF1 graph puts in front of every variable because their model layer has no name of its own):

  theirs                                          ours (model.patch_embedding: easytransfer)
  bert/embeddings/word_embeddings [V, H]          encoder word_embeddings (+ tied MLM output)
  bert/embeddings/position_embeddings [P, H]      encoder position_embedding
  bert/embeddings/token_type_embeddings [T, H]    encoder type_embeddings
  bert/embeddings/LayerNorm/{gamma,beta}          encoder embeddings/layer_norm
  bert/encoder/layer_i/attention/self/{query,key,value}/kernel [H, H], bias [H]
                                                  transformer/layer_i/self_attention/{q,k,v}
                                                  kernel [H, n, H/n], bias [n, H/n]
  bert/encoder/layer_i/attention/output/dense/kernel [H, H], bias
                                                  self_attention/attention_output [n, H/n, H]
  bert/encoder/layer_i/attention/output/LayerNorm self_attention_layer_norm
  bert/encoder/layer_i/intermediate/dense         intermediate
  bert/encoder/layer_i/output/dense               output
  bert/encoder/layer_i/output/LayerNorm           output_layer_norm
  bert/pooler/dense/{kernel,bias}                 encoder pooler_transform
  bert/image_embeddings/image_projector [D, H]    patch_embedding image_projector
  bert/image_embeddings/patch_position_embeddings [64, H]   patch_embedding (same name)
  bert/image_embeddings/patch_type_embeddings [2, H]        patch_embedding (same name)
  bert/image_embeddings/ImageEmbLayerNorm/{gamma,beta}      patch_embedding ImageEmbLayerNorm
  cls/predictions/transform/dense/{kernel,bias}   MLM head dense
  cls/predictions/transform/LayerNorm/{gamma,beta}  MLM head LayerNorm
  cls/predictions/output_bias [V]                 MLM head output bias
  cls/seq_relationship/output_weights [2, H]      TIA classifier kernel [H, 2] (transposed)
  cls/seq_relationship/output_bias [2]            TIA classifier bias
  cls/img_predictions/output_weights [H, D]       MPM head (model.mpm_head: linear)

The NSP head becomes the TIA head as it is: their evaluation ranks by `nsp_logits[:, 1]` and counts
label 1 as the ground truth, so class 1 = match, as ours. Training state (`global_step`, Adam's
`beta1_power` / `beta2_power`, `<variable>/Adam`, `<variable>/Adam_1`, and BERT's
`adam_m` / `adam_v`) is left alone; `global_step` numbers the written checkpoint.

Sizes come from the shapes; the number of attention heads cannot (the [H, H] kernels do not show
it): H / 64, BERT's head size, unless given. Every variable is checked before anything is written:
missing, unexpected and mis-shaped variables are listed together in one `CheckpointMismatchError`.
`training/import_checkpoint.py` writes the run directory from what this module reads.
"""

import dataclasses
import json
import os
import re
import shutil
import tempfile

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.modeling.checkpoints.canonical_table import CheckpointMismatchError

# The scope their TF1 graph puts in front of every variable (the class name in snake case).
MODEL_SCOPE = "image_bert_pre_trained_model"
_PREFIX_PATTERN = re.compile(r"^(?:[A-Za-z0-9_.\-]+/)?((?:bert|cls)/.+)$")
_OPTIMIZER_PATTERN = re.compile(
    r"(?:^|/)(?:global_step|beta1_power(?:_\d+)?|beta2_power(?:_\d+)?)$|"
    r"/(?:Adam|Adam_\d+|adam_m|adam_v)$")
_LAYER_PATTERN = re.compile(r"^bert/encoder/layer_(\d+)/")
_MAX_LISTED = 12
# BERT's attention head size: H / 64 heads unless given (BERT-base: 768 / 64 = 12).
_BERT_HEAD_SIZE = 64

_GLOBAL_NAMES = (
    "bert/embeddings/word_embeddings",
    "bert/embeddings/position_embeddings",
    "bert/embeddings/token_type_embeddings",
    "bert/embeddings/LayerNorm/gamma",
    "bert/embeddings/LayerNorm/beta",
    "bert/pooler/dense/kernel",
    "bert/pooler/dense/bias",
    "bert/image_embeddings/image_projector",
    "bert/image_embeddings/patch_position_embeddings",
    "bert/image_embeddings/patch_type_embeddings",
    "bert/image_embeddings/ImageEmbLayerNorm/gamma",
    "bert/image_embeddings/ImageEmbLayerNorm/beta",
    "cls/predictions/transform/dense/kernel",
    "cls/predictions/transform/dense/bias",
    "cls/predictions/transform/LayerNorm/gamma",
    "cls/predictions/transform/LayerNorm/beta",
    "cls/predictions/output_bias",
    "cls/seq_relationship/output_weights",
    "cls/seq_relationship/output_bias",
    "cls/img_predictions/output_weights",
)
_LAYER_SUFFIXES = tuple(
    [f"attention/self/{p}/{w}" for p in ("query", "key", "value") for w in ("kernel", "bias")] +
    [f"{block}/{part}" for block in ("attention/output", "output")
     for part in ("dense/kernel", "dense/bias", "LayerNorm/gamma", "LayerNorm/beta")] +
    ["intermediate/dense/kernel", "intermediate/dense/bias"])


@dataclasses.dataclass
class EasyTransferCheckpoint:
  """A released checkpoint read by name.

  Attributes:
    weights: bare name (`bert/...`, `cls/...`) -> float32 np.ndarray, model variables only.
    source: the checkpoint prefix read.
    global_step: its `global_step` (0 when absent).
    skipped: names of the training-state variables left alone (global_step, Adam slots, ...).
    prefixes: the scopes stripped from the names (e.g. {"image_bert_pre_trained_model"}).
  """
  weights: dict
  source: str
  global_step: int = 0
  skipped: list = dataclasses.field(default_factory=list)
  prefixes: set = dataclasses.field(default_factory=set)


def resolve_prefix(path):
  """The checkpoint prefix: `path` itself, or the latest checkpoint in a folder.

  Raises:
    FileNotFoundError: nothing readable there.
  """
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      found = sorted(tf.io.gfile.glob(os.path.join(path, "*.index")))
      if len(found) != 1:
        raise FileNotFoundError(f"no TF1 checkpoint in {path} (no `checkpoint` state file and "
                                f"{len(found)} *.index files); pass the prefix, e.g. "
                                f"{path}/model.ckpt-54198")
      latest = found[0][:-len(".index")]
    return latest
  if not tf.io.gfile.exists(path + ".index"):
    raise FileNotFoundError(f"TF1 checkpoint {path} not found (no {path}.index): pass the prefix "
                            "without .index / .data-*, e.g. fashionbert_pretrain_model_fin/"
                            "model.ckpt-54198")
  return path


def is_training_state(name):
  """True for the optimizer / step variables an importer leaves alone."""
  return bool(_OPTIMIZER_PATTERN.search(name))


def read_checkpoint(path):
  """Reads the model variables of an EasyTransfer FashionBERT checkpoint by name.

  Accepts names with the model scope (`image_bert_pre_trained_model/bert/...`) and bare ones.

  Raises:
    FileNotFoundError: no checkpoint at `path`.
    CheckpointMismatchError: one bare name appears twice (under two scopes).
  """
  prefix = resolve_prefix(path)
  reader = tf.train.load_checkpoint(prefix)
  shapes = reader.get_variable_to_shape_map()
  result = EasyTransferCheckpoint(weights={}, source=prefix)
  for name in sorted(shapes):
    if is_training_state(name):
      result.skipped.append(name)
      if name.split("/")[-1] == "global_step":
        result.global_step = int(reader.get_tensor(name))
      continue
    match = _PREFIX_PATTERN.match(name)
    bare = match.group(1) if match else name
    if bare != name:
      result.prefixes.add(name[:-len(bare) - 1])
    if bare in result.weights:
      raise CheckpointMismatchError(f"{prefix}: variable {bare!r} appears twice (scopes "
                                    f"{sorted(result.prefixes)})")
    result.weights[bare] = np.asarray(reader.get_tensor(name), dtype=np.float32)
  logging.info("read %d model variables from %s (global_step %d; %d training-state variables "
               "left alone; scope %s)", len(result.weights), prefix, result.global_step,
               len(result.skipped), sorted(result.prefixes) or "none")
  return result


def layer_count(weights):
  """The number of encoder layers named `bert/encoder/layer_<i>/...` (0 when none)."""
  layers = {int(m.group(1)) for m in map(_LAYER_PATTERN.match, weights) if m}
  return max(layers) + 1 if layers else 0


def expected_names(num_layers):
  """Every variable name (bare) of an EasyTransfer FashionBERT with `num_layers` layers."""
  names = list(_GLOBAL_NAMES)
  for i in range(num_layers):
    names += [f"bert/encoder/layer_{i}/{suffix}" for suffix in _LAYER_SUFFIXES]
  return names


def _listed(items):
  items = list(items)
  shown = ", ".join(items[:_MAX_LISTED])
  return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def mismatch_error(source, missing=(), unexpected=(), misshaped=()):
  """One-line `CheckpointMismatchError` listing what does not fit."""
  parts = []
  if missing:
    parts.append(f"{len(missing)} missing [{_listed(missing)}]")
  if unexpected:
    parts.append(f"{len(unexpected)} unexpected [{_listed(unexpected)}]")
  if misshaped:
    parts.append(f"{len(misshaped)} mis-shaped [{_listed(misshaped)}]")
  return CheckpointMismatchError(
      f"{source} is not an EasyTransfer FashionBERT checkpoint this model can take: "
      + "; ".join(parts))


def _shape_of(weights, name):
  return weights[name].shape if name in weights else None


def describe_checkpoint(checkpoint, num_attention_heads=0):
  """(model config keys of the checkpoint's network, missing names, unexpected names).

  The keys set the sizes (read from the shapes) and the easytransfer layout; the names are bare
  names the checkpoint lacks / has beyond `expected_names`.

  Raises:
    CheckpointMismatchError: a variable the sizes are read from is missing or not 2-D, or
      the width does not split into the heads.
  """
  weights, source = checkpoint.weights, checkpoint.source
  num_layers = layer_count(weights)
  names = expected_names(num_layers)
  missing = [n for n in names if n not in weights]
  unexpected = sorted(n for n in weights if n not in set(names))
  sizing = ("bert/embeddings/word_embeddings", "bert/embeddings/position_embeddings",
            "bert/embeddings/token_type_embeddings", "bert/image_embeddings/image_projector",
            "bert/encoder/layer_0/intermediate/dense/kernel")
  if (num_layers == 0 or any(n in missing for n in sizing)
      or any(len(weights[n].shape) != 2 for n in sizing if n in weights)):
    if num_layers == 0:
      missing = ["bert/encoder/layer_0/..."] + missing
    raise mismatch_error(source, missing, unexpected,
                         [f"{n} {list(weights[n].shape)} (needs 2-D)" for n in sizing
                          if n in weights and len(weights[n].shape) != 2])
  vocab_size, hidden_size = _shape_of(weights, "bert/embeddings/word_embeddings")
  heads = int(num_attention_heads) or hidden_size // _BERT_HEAD_SIZE
  if heads <= 0 or hidden_size % heads:
    raise CheckpointMismatchError(
        f"{source}: width H={hidden_size} does not split into {heads} attention heads; pass "
        "--num_attention_heads")
  return dict(
      encoder_format="none",
      encoder_checkpoint="",
      encoder_activation="gelu_approximate",  # Their gelu_new: the tanh form.
      num_layers=num_layers,
      vocab_size=int(vocab_size),
      hidden_size=int(hidden_size),
      num_attention_heads=heads,
      intermediate_size=int(_shape_of(weights,
                                      "bert/encoder/layer_0/intermediate/dense/kernel")[1]),
      max_position_embeddings=int(_shape_of(weights, "bert/embeddings/position_embeddings")[0]),
      type_vocab_size=int(_shape_of(weights, "bert/embeddings/token_type_embeddings")[0]),
      feature_dim=int(_shape_of(weights, "bert/image_embeddings/image_projector")[0]),
      patch_embedding="easytransfer",
      mpm_head="linear",
      # Their features are precomputed ResNet-50 patch features, fed raw.
      use_precomputed_features=True,
      patch_feature_normalization="none",
      # No ResNet-50 here: a placeholder extractor of the right width for the image path
      # (never their features; see docs/authors_model.md). The other patch settings are the
      # linear backbone's defaults, whatever the base config says.
      backbone="linear",
      backbone_weights="",
      patch_feature_mode="patches",
      patch_input_size=0,
      image_normalization="",
      patch_colour_histogram_bins=0,
      # Their checkpoint has its MLM head.
      mlm_head_training_steps=0,
  ), missing, unexpected


def _to_ours(value, kind, num_heads):
  """Their layout -> ours for one variable."""
  if kind == "copy":
    return value
  if kind == "transpose":
    return value.T
  if kind == "qkv_kernel":  # [H, H] -> [H, n, H/n]: output columns are head-major.
    return value.reshape(value.shape[0], num_heads, -1)
  if kind == "qkv_bias":  # [H] -> [n, H/n]
    return value.reshape(num_heads, -1)
  if kind == "out_kernel":  # [H, H] -> [n, H/n, H]: input rows are head-major.
    return value.reshape(num_heads, -1, value.shape[1])
  raise ValueError(kind)


def _their_shape(shape, kind):
  """The shape theirs must have for our variable of `shape` under `kind`."""
  shape = list(shape)
  if kind == "transpose":
    return shape[::-1]
  if kind == "qkv_kernel":
    return [shape[0], shape[1] * shape[2]]
  if kind == "qkv_bias":
    return [shape[0] * shape[1]]
  if kind == "out_kernel":
    return [shape[0] * shape[1], shape[2]]
  return shape


def variable_map(model):
  """[(their bare name, our variable, kind)] for every weight of an easytransfer-layout model."""
  encoder = model.encoder
  # pylint: disable=protected-access
  entries = [
      ("bert/embeddings/word_embeddings", encoder._embedding_layer.embeddings, "copy"),
      ("bert/embeddings/position_embeddings",
       encoder._position_embedding_layer._position_embeddings, "copy"),
      ("bert/embeddings/token_type_embeddings", encoder._type_embedding_layer.embeddings, "copy"),
      ("bert/embeddings/LayerNorm/gamma", encoder._embedding_norm_layer.gamma, "copy"),
      ("bert/embeddings/LayerNorm/beta", encoder._embedding_norm_layer.beta, "copy"),
      ("bert/pooler/dense/kernel", encoder.pooler_layer.kernel, "copy"),
      ("bert/pooler/dense/bias", encoder.pooler_layer.bias, "copy"),
  ]
  for i, block in enumerate(encoder.transformer_layers):
    scope = f"bert/encoder/layer_{i}/"
    attention = block._attention_layer
    for part, dense in (("query", attention._query_dense), ("key", attention._key_dense),
                        ("value", attention._value_dense)):
      entries += [(f"{scope}attention/self/{part}/kernel", dense.kernel, "qkv_kernel"),
                  (f"{scope}attention/self/{part}/bias", dense.bias, "qkv_bias")]
    entries += [
        (f"{scope}attention/output/dense/kernel", attention._output_dense.kernel, "out_kernel"),
        (f"{scope}attention/output/dense/bias", attention._output_dense.bias, "copy"),
        (f"{scope}attention/output/LayerNorm/gamma", block._attention_layer_norm.gamma, "copy"),
        (f"{scope}attention/output/LayerNorm/beta", block._attention_layer_norm.beta, "copy"),
        (f"{scope}intermediate/dense/kernel", block._intermediate_dense.kernel, "copy"),
        (f"{scope}intermediate/dense/bias", block._intermediate_dense.bias, "copy"),
        (f"{scope}output/dense/kernel", block._output_dense.kernel, "copy"),
        (f"{scope}output/dense/bias", block._output_dense.bias, "copy"),
        (f"{scope}output/LayerNorm/gamma", block._output_layer_norm.gamma, "copy"),
        (f"{scope}output/LayerNorm/beta", block._output_layer_norm.beta, "copy"),
    ]
  # pylint: enable=protected-access
  patches, mlm, tia = model.patch_embedding, model.mlm_head, model.tia_head.classifier
  entries += [
      ("bert/image_embeddings/image_projector", patches.image_projector, "copy"),
      ("bert/image_embeddings/patch_position_embeddings", patches.patch_position_embeddings,
       "copy"),
      ("bert/image_embeddings/patch_type_embeddings", patches.patch_type_embeddings, "copy"),
      ("bert/image_embeddings/ImageEmbLayerNorm/gamma", patches.layer_norm.gamma, "copy"),
      ("bert/image_embeddings/ImageEmbLayerNorm/beta", patches.layer_norm.beta, "copy"),
      ("cls/predictions/transform/dense/kernel", mlm.dense.kernel, "copy"),
      ("cls/predictions/transform/dense/bias", mlm.dense.bias, "copy"),
      ("cls/predictions/transform/LayerNorm/gamma", mlm.layer_norm.gamma, "copy"),
      ("cls/predictions/transform/LayerNorm/beta", mlm.layer_norm.beta, "copy"),
      ("cls/predictions/output_bias", mlm.bias, "copy"),
      ("cls/seq_relationship/output_weights", tia.kernel, "transpose"),
      ("cls/seq_relationship/output_bias", tia.bias, "copy"),
      ("cls/img_predictions/output_weights", model.mpm_head.output_weights, "copy"),
  ]
  return entries


def assign_checkpoint(model, checkpoint, missing=(), unexpected=()):
  """Checks every variable of `checkpoint` against `model` (easytransfer layout), then assigns.

  Raises:
    CheckpointMismatchError: anything missing, unexpected or mis-shaped (all listed; nothing
      assigned).
  """
  num_heads = model.encoder.get_config()["num_attention_heads"]
  plan, misshaped = [], []
  for name, variable, kind in variable_map(model):
    if name not in checkpoint.weights:
      continue  # listed in `missing`
    value = checkpoint.weights[name]
    needed = _their_shape(variable.shape, kind)
    if list(value.shape) != needed:
      misshaped.append(f"{name} {list(value.shape)} (needs {needed})")
      continue
    plan.append((variable, _to_ours(value, kind, num_heads)))
  if missing or unexpected or misshaped:
    raise mismatch_error(checkpoint.source, missing, unexpected, misshaped)
  mapped = {id(variable) for variable, _ in plan}
  backbone = {id(v) for v in model.patch_feature_extractor.variables}
  unmapped = [v.name for v in model.variables if id(v) not in mapped and id(v) not in backbone]
  if unmapped:
    raise CheckpointMismatchError(f"model variables without a value in {checkpoint.source}: "
                                  f"{_listed(unmapped)}")
  for variable, value in plan:
    variable.assign(tf.cast(value, variable.dtype))
  logging.info("assigned %d variables from %s", len(plan), checkpoint.source)
  return len(plan)
