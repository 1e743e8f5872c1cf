"""Builds the search click model (`search/click_model.py`) and initializes it (paper 3.4, Table 4).

Architecture (`build_search_architecture(model_config, search_config)`): the encoder sizes come
from the model section the way pretraining reads them (the BERT checkpoint's sizes, or the config's
for `encoder_format: none`), with `model.num_layers` layers (0 = all) and a segment table of 3 rows
(fashionbert: Q, I, T) or 2 (oribert, bert_img: Q, T); see `layout.py`.

The model section used (`search_model_config`) is the pretraining run's own (its params.yaml, next
to `search.pretrained_checkpoint`: backbone, feature size and normalization, encoder) with
`model.search_variant` and `model.num_layers` taken from the fine-tuning config. It is saved in the
fine-tuning run's params.yaml, so `restore_search_model` rebuilds the same model without the
pretraining run.

Initialization (`initialize_search_model`), the choices where the paper is silent:
  fashionbert  everything from the pretraining checkpoint (`search.pretrained_checkpoint`): word,
               position and LayerNorm embeddings, the first k transformer layers (k =
               `model.num_layers`; the paper's 2-layer model = the first 2 of the 6), pooler, patch
               embedding and the patch-feature statistics. Segment table [3, E]: rows 0 (Q) and 1
               (I) are the checkpoint's text and image rows; row 2 (T) per
               `search.title_segment_init`: "text" = a copy of the checkpoint's text row (default:
               titles were the text segment in pretraining), "mean" = the mean of rows 0 and 1,
               "random" = fresh (BERT's truncated normal). The click head
               (`search.click_head_init`) starts from the pretrained TIA classifier ("tia":
               P(click) starts as "does this image match this text") or fresh ("random").
  oribert,     with `search.baseline_init: bert` (default; the paper: "In pre-training, we adopt the
  bert_img     original pre-trained BERT model") the encoder is the original BERT the pretraining
               started from (the pretraining run's `model.encoder_format` / `encoder_checkpoint`:
               MiniLM-L6 in the demo), first k layers, segment rows 0 / 1 as BERT's sentence A / B;
               with "pretrained", the pretraining checkpoint's encoder (2 rows as they are). The
               click head and the bert_img image projection start fresh; bert_img's patch-feature
               statistics are the pretraining run's (data statistics, not learned).
  any variant  with `search.reduce_from` (a fine-tuning run of the same variant, at least k
               layers): its first k layers and the rest of its weights (patch embedding, click
               head, image projection, patch statistics) instead: model reduction after
               fine-tuning, the other reading of the paper's "only the first two FashionBERT
               layers" (measured on the toy logs: it does not help the 2-layer model, docs/experiments/table4_investigation.md).

Restore (`restore_search_model`): a fine-tuning run's params.yaml holds the full config it trained
with, its `model` section the search model's own, so the architecture is rebuilt from it alone (the
pretraining checkpoint is not read). Checkpoints are `tf.train.Checkpoint(model=SearchModel,
optimizer=..., step=...)`; the model alone is restored (`expect_partial`), and every model variable
must be there.
"""

import copy
import dataclasses
import os
import types

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from official.modeling import tf_utils

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import contract
from fashionbert_tf.evaluation import pretraining_run as restore_lib
from fashionbert_tf.modeling import encoder_sizes as encoder_sizes_lib
from fashionbert_tf.modeling import model_builder as fashionbert_builder
from fashionbert_tf.modeling.checkpoints import assign
from fashionbert_tf.modeling.checkpoints import canonical_table
from fashionbert_tf.modeling.checkpoints import readers
from fashionbert_tf.search import layout
from fashionbert_tf.search.click_model import SearchModel


def pretraining_checkpoint(search_config):
  """(checkpoint prefix, the pretraining run's ExperimentConfig or None) of
  `search.pretrained_checkpoint` (a prefix or a run folder: its latest checkpoint).

  Raises:
    FileNotFoundError: no such checkpoint.
  """
  where = search_config.pretrained_checkpoint
  if not where:
    raise FileNotFoundError("search.pretrained_checkpoint is empty: give the pretraining "
                            "checkpoint (runs/x/ckpt-N) or run folder")
  path = restore_lib.resolve_checkpoint(where, where)
  params = os.path.join(os.path.dirname(path), restore_lib.PARAMS_FILE)
  run_config = experiment_config.load_config(params) if tf.io.gfile.exists(params) else None
  if run_config is None:
    logging.warning("%s not found: the pretraining model is assumed to match the fine-tuning "
                    "config's model section", params)
  return path, run_config


def search_model_config(config):
  """The model section of the search model (module docstring): a new ModelConfig."""
  base = config.model
  try:
    _, run_config = pretraining_checkpoint(config.search)
    if run_config is not None:
      base = run_config.model
  except FileNotFoundError:
    if not (config.model.search_variant != "fashionbert" and
            config.search.baseline_init == "bert"):
      raise
    logging.warning("no pretraining checkpoint (%s): %s starts from the base BERT with the "
                    "fine-tuning config's model section", config.search.pretrained_checkpoint,
                    config.model.search_variant)
  model_config = copy.deepcopy(base)
  model_config.search_variant = config.model.search_variant
  model_config.num_layers = config.model.num_layers
  if not model_config.num_layers and base.encoder_format == "none":
    # No BERT checkpoint to count "all" layers in (an imported run, a random-init run): 0 = the
    # pretraining run's own layer count.
    model_config.num_layers = base.num_layers
  return model_config


def _read_original_bert(model_config):
  """`PretrainedBert` of the original BERT named by model.encoder_format / encoder_checkpoint."""
  return readers.read_pretrained_bert(
      model_config.encoder_format, model_config.encoder_checkpoint,
      activation=model_config.encoder_activation)


def encoder_sizes(model_config):
  """`EncoderSizes` of the search encoder: the checkpoint's (or config's), k layers, 2 / 3 rows."""
  if model_config.encoder_format == "none":
    sizes = encoder_sizes_lib.sizes_from_config(model_config)
  else:
    pretrained = _read_original_bert(model_config)
    sizes = dataclasses.replace(pretrained.sizes)
    if model_config.num_layers > sizes.num_layers:
      raise ValueError(f"model.num_layers={model_config.num_layers} but the checkpoint "
                       f"{pretrained.source} has only {sizes.num_layers} layers")
    if model_config.num_layers:
      sizes.num_layers = model_config.num_layers
  sizes.type_vocab_size = layout.type_vocab_size(model_config.search_variant)
  return sizes


def dummy_inputs(feature_dim, batch_size=1, text_length=4):
  ids = tf.ones([batch_size, text_length], tf.int32)
  return {"input_word_ids": ids, "input_mask": ids, "input_type_ids": tf.zeros_like(ids),
          contract.FEATURES_KEY: tf.zeros([batch_size, contract.NUM_PATCHES, feature_dim])}


def build_search_architecture(model_config, search_config):
  """A freshly initialized `SearchModel` of `model_config.search_variant`, variables created.

  Returns:
    (SearchModel, the `FashionBertModel` its parts come from: encoder, patch embedding,
    normalization and backbone are shared; its MLM / MPM / TIA heads are not used).
  """
  variant = model_config.search_variant
  sizes = encoder_sizes(model_config)
  parts = fashionbert_builder.build_model_from_sizes(sizes, model_config)
  initializer = tf_keras.initializers.TruncatedNormal(stddev=model_config.initializer_range)
  image_projection = None
  if variant == "bert_img":
    image_projection = tf_keras.layers.Dense(sizes.hidden_size, activation="tanh",
                                             kernel_initializer=tf_utils.clone_initializer(
                                                 initializer),
                                             name="image_projection")
  model = SearchModel(
      variant=variant,
      encoder=parts.encoder,
      click_head=tf_keras.layers.Dense(2, kernel_initializer=tf_utils.clone_initializer(initializer),
                                       dtype="float32",
                                       name="click"),
      patch_embedding=parts.patch_embedding if variant == "fashionbert" else None,
      patch_feature_normalization=(parts.patch_feature_normalization
                                   if layout.uses_image(variant) else None),
      patch_feature_extractor=parts.patch_feature_extractor if layout.uses_image(variant) else None,
      image_projection=image_projection,
      image_pooling=search_config.image_pooling,
      image_dropout_rate=search_config.image_dropout_rate,
      name=f"search_{variant}")
  model(dummy_inputs(int(parts.patch_feature_extractor.feature_dim)), training=False)
  return model, parts


def _checkpoint_layer_count(path):
  """Transformer layers of the FashionBERT encoder saved in checkpoint `path`."""
  names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  layers = {int(name.split("model/encoder/_transformer_layers/")[1].split("/")[0])
            for name in names if name.startswith("model/encoder/_transformer_layers/")}
  if not layers:
    raise canonical_table.CheckpointMismatchError(
        f"{path}: no FashionBERT encoder layers (model/encoder/_transformer_layers/N) in it")
  return max(layers) + 1


def _restore_pretraining_model(path, model_config):
  """The pretraining FashionBertModel of checkpoint `path` (all the layers it saved), restored."""
  full = copy.deepcopy(model_config)
  full.num_layers = _checkpoint_layer_count(path)
  source = fashionbert_builder.build_fashionbert(full, load_pretrained_weights=False)
  status = tf.train.Checkpoint(model=source).restore(path).expect_partial()
  status.assert_existing_objects_matched()
  return source


def _canonical_variables(layer):
  table = {}
  for variable in layer.variables:
    name = canonical_table.canonical_name(variable.name)
    if name is not None:
      table[name] = variable
  return table


def _copy_encoder(target_encoder, source_encoder, title_segment_init):
  """Copies every target encoder variable from the source by canonical name; maps the segment
  table [2, E] -> [3, E] when the target has 3 rows (module docstring)."""
  source = _canonical_variables(source_encoder)
  copied = 0
  for name, variable in _canonical_variables(target_encoder).items():
    if name not in source:
      raise canonical_table.CheckpointMismatchError(
          f"pretraining checkpoint lacks encoder variable {name!r}")
    value = source[name].numpy()
    if name == "type_embeddings/embeddings" and variable.shape[0] != value.shape[0]:
      if value.shape[0] != 2 or variable.shape[0] != 3:
        raise canonical_table.CheckpointMismatchError(
            f"segment table: cannot map {value.shape[0]} rows to {variable.shape[0]}")
      if title_segment_init == "text":
        title_row = value[0]
      elif title_segment_init == "mean":
        title_row = value.mean(axis=0)
      else:
        title_row = variable.numpy()[2]
      value = np.stack([value[0], value[1], title_row])
    if tuple(value.shape) != tuple(variable.shape):
      raise canonical_table.CheckpointMismatchError(
          f"encoder variable {name!r}: checkpoint shape {list(value.shape)}, model "
          f"{list(variable.shape)}")
    variable.assign(tf.cast(value, variable.dtype))
    copied += 1
  return copied


def _copy_layer(target, source):
  for target_variable, source_variable in zip(target.variables, source.variables):
    target_variable.assign(source_variable)
  if len(target.variables) != len(source.variables):
    raise canonical_table.CheckpointMismatchError(
        f"layer {target.name}: {len(target.variables)} variables, checkpoint has "
        f"{len(source.variables)}")


def _reduce_from_finetuned(model, where):
  """Initializes `model` from the first layers of the fine-tuned search model at `where`.

  Raises:
    ValueError: the run is of another variant or has fewer layers than `model`.
  """
  source, _, path = restore_search_model(where)
  if source.variant != model.variant:
    raise ValueError(f"search.reduce_from={where}: a {source.variant} run; this model is "
                     f"{model.variant}")
  if source.encoder.num_layers < model.encoder.num_layers:
    raise ValueError(f"search.reduce_from={where}: {source.encoder.num_layers} layers, fewer "
                     f"than model.num_layers={model.encoder.num_layers}")
  copied = _copy_encoder(model.encoder, source.encoder, "text")
  for name in ("patch_embedding", "click_head", "image_projection",
               "patch_feature_normalization"):
    if getattr(model, name) is not None:
      _copy_layer(getattr(model, name), getattr(source, name))
  return (f"the first {model.encoder.num_layers} of {source.encoder.num_layers} layers of the "
          f"fine-tuned {path} ({copied} encoder variables, + its patch embedding, click head, "
          "patch statistics)")


def initialize_search_model(model, parts, model_config, search_config):
  """Assigns the initial weights (module docstring). Returns a one-line description."""
  del parts
  if search_config.reduce_from:
    what = _reduce_from_finetuned(model, search_config.reduce_from)
  else:
    what = _initialize_from_pretraining(model, model_config, search_config)
  logging.info("search model %s, %d layers: %s", model_config.search_variant,
               model.encoder.num_layers, what)
  return what


def _initialize_from_pretraining(model, model_config, search_config):
  """The pretraining checkpoint / original BERT initialization (module docstring)."""
  variant = model_config.search_variant
  from_pretraining = variant == "fashionbert" or search_config.baseline_init == "pretrained"
  source = None
  path = None
  try:
    path, _ = pretraining_checkpoint(search_config)
    source = _restore_pretraining_model(path, model_config)
  except FileNotFoundError:
    if from_pretraining:
      raise
  if from_pretraining:
    copied = _copy_encoder(model.encoder, source.encoder, search_config.title_segment_init)
    what = f"{copied} encoder variables from the pretraining checkpoint {path}"
    if variant == "fashionbert":
      target, origin = model.patch_embedding, source.patch_embedding
      if getattr(target, "output_is_normalized", False):
        _copy_layer(target, origin)  # model.patch_embedding=easytransfer: all its own tables
      else:
        # The projection and the patch position table (its segment row is the encoder's, copied).
        for name in ("kernel", "bias"):
          getattr(target.projection, name).assign(getattr(origin.projection, name))
        target.patch_position_embeddings.assign(origin.patch_position_embeddings)
      head = "fresh"
      if search_config.click_head_init == "tia":
        model.click_head.kernel.assign(source.tia_head.classifier.kernel)
        model.click_head.bias.assign(source.tia_head.classifier.bias)
        head = "TIA classifier"
      what += (f" (+ patch embedding, click head = {head}, title segment = "
               f"{search_config.title_segment_init})")
  elif model_config.encoder_format == "none":
    what = "a randomly initialized encoder (model.encoder_format: none, no original BERT)"
  else:
    pretrained = _read_original_bert(model_config)
    assign.assign_pretrained_bert(types.SimpleNamespace(encoder=model.encoder),
                                            pretrained, load_heads=False)
    what = f"encoder from the original BERT {pretrained.source}"
  if model.patch_feature_normalization is not None:
    if source is not None and source.patch_feature_normalization is not None:
      _copy_layer(model.patch_feature_normalization, source.patch_feature_normalization)
    else:
      raise FileNotFoundError(
          f"search variant {variant} needs the pretraining run's patch-feature statistics: "
          f"no pretraining checkpoint at {search_config.pretrained_checkpoint}")
  return what


def build_search_model(config):
  """The search model of `config`, initialized for fine-tuning: (SearchModel, model section)."""
  model_config = search_model_config(config)
  model, parts = build_search_architecture(model_config, config.search)
  initialize_search_model(model, parts, model_config, config.search)
  return model, model_config


def restore_search_model(where):
  """(SearchModel, the run's ExperimentConfig, checkpoint path) of a run folder or a prefix.

  Raises:
    FileNotFoundError: no checkpoint or no params.yaml.
    AssertionError: a model variable is missing from the checkpoint.
  """
  path = restore_lib.resolve_checkpoint(where, where)
  params = os.path.join(os.path.dirname(path), restore_lib.PARAMS_FILE)
  if not tf.io.gfile.exists(params):
    raise FileNotFoundError(f"{params} not found: not a fine-tuning run folder")
  config = experiment_config.load_config(params)
  model, _ = build_search_architecture(config.model, config.search)
  status = tf.train.Checkpoint(model=model).restore(path).expect_partial()
  status.assert_existing_objects_matched()
  logging.info("restored search model %s (%d layers) from %s", config.model.search_variant,
               model.encoder.num_layers, path)
  return model, config, path
