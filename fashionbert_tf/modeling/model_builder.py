"""Builds the FashionBERT model from the `model` section of the experiment config.

`build_fashionbert(model_config)`:
1. reads the pre-trained encoder named by `model.encoder_format` / `model.encoder_checkpoint`
   (`checkpoints/`: Hugging Face safetensors, TF-Hub SavedModel, Model Garden checkpoint;
   empty path + hf_safetensors = the offline MiniLM default) and takes the encoder sizes from it;
   `none` = random init with the sizes in the config;
2. builds the patch feature extractor (`patch_features.build_patch_feature_extractor`), the
   patch-feature standardization (`model.patch_feature_normalization`; its statistics are set by
   the caller, `pretrain.py`, or restored from a checkpoint), the encoder
   (`encoder.FashionBertEncoder`, `model.num_layers` layers: 0 = all of the checkpoint's), the
   patch embedding and the three heads, and creates every variable with one call on a dummy batch;
3. assigns the checkpoint's weights (all checked first: a missing or mis-shaped variable is an error
   naming it, and nothing is assigned).
Call it inside a distribution strategy's scope to get distributed variables.
"""

import dataclasses

from absl import logging
import tensorflow as tf
import tf_keras

from fashionbert_tf.data import contract
from fashionbert_tf.modeling import easytransfer_embedding
from fashionbert_tf.modeling import encoder as encoder_lib
from fashionbert_tf.modeling import encoder_sizes
from fashionbert_tf.modeling import heads
from fashionbert_tf.modeling import patch_embedding as patch_embedding_lib
from fashionbert_tf.modeling import patch_feature_normalization
from fashionbert_tf.modeling import patch_features
from fashionbert_tf.modeling.checkpoints import assign
from fashionbert_tf.modeling.checkpoints import readers
from fashionbert_tf.modeling.fashionbert_model import FashionBertModel

ENCODER_FORMATS = ("hf_safetensors", "tfhub", "model_garden", "none")
# `model.patch_embedding` and `model.mpm_head` (modeling/easytransfer_embedding.py says why both).
PATCH_EMBEDDINGS = ("fashionbert", "easytransfer")
MPM_HEADS = ("transform", "linear")


def check_layout(model_config):
  """Raises ValueError naming the field unless `model.patch_embedding` / `model.mpm_head` are
  known values."""
  if model_config.patch_embedding not in PATCH_EMBEDDINGS:
    raise ValueError(f"model.patch_embedding = {model_config.patch_embedding!r}; expected one of "
                     f"{', '.join(PATCH_EMBEDDINGS)}")
  if model_config.mpm_head not in MPM_HEADS:
    raise ValueError(f"model.mpm_head = {model_config.mpm_head!r}; expected one of "
                     f"{', '.join(MPM_HEADS)}")


def build_encoder(sizes, model_config):
  """A `FashionBertEncoder` of the given sizes (dropout rates from the config)."""
  if sizes.type_vocab_size < 2:
    raise ValueError(
        f"the encoder's type vocabulary has {sizes.type_vocab_size} entries; FashionBERT needs 2 "
        "(segment 0 = text, 1 = image)")
  if sizes.max_position_embeddings < 2:
    raise ValueError(f"max_position_embeddings={sizes.max_position_embeddings} is too small")
  check_layout(model_config)
  encoder_class = (easytransfer_embedding.SeparatelyNormalizedEncoder
                   if model_config.patch_embedding == "easytransfer"
                   else encoder_lib.FashionBertEncoder)
  return encoder_class(
      vocab_size=sizes.vocab_size,
      hidden_size=sizes.hidden_size,
      num_layers=sizes.num_layers,
      num_attention_heads=sizes.num_attention_heads,
      max_sequence_length=sizes.max_position_embeddings,
      type_vocab_size=sizes.type_vocab_size,
      inner_dim=sizes.intermediate_size,
      inner_activation=encoder_lib.get_activation(sizes.activation),
      output_dropout=model_config.dropout_rate,
      attention_dropout=model_config.attention_dropout_rate,
      initializer=tf_keras.initializers.TruncatedNormal(stddev=model_config.initializer_range),
      embedding_width=sizes.embedding_width,
      name="encoder")


def dummy_batch(feature_dim, text_length=3, batch_size=1):
  """A batch (patch-feature mode, every optional key) that creates all variables when called."""
  ids = tf.ones([batch_size, text_length], tf.int32)
  return {
      "input_word_ids": ids,
      "input_mask": ids,
      "input_type_ids": tf.zeros_like(ids),
      "masked_lm_positions": tf.ones([batch_size, 1], tf.int32),
      "masked_lm_ids": tf.ones([batch_size, 1], tf.int32),
      "masked_lm_weights": tf.ones([batch_size, 1], tf.float32),
      contract.FEATURES_KEY: tf.zeros([batch_size, contract.NUM_PATCHES, feature_dim], tf.float32),
      "masked_patch_positions": tf.zeros([batch_size, 1], tf.int32),
      "masked_patch_weights": tf.ones([batch_size, 1], tf.float32),
  }


def build_model_from_sizes(sizes, model_config, patch_feature_extractor=None):
  """Builds a `FashionBertModel` with freshly initialized encoder and heads; variables created.

  Args:
    sizes: `EncoderSizes`.
    model_config: the `model` config section (dropouts, initializer, backbone).
    patch_feature_extractor: optional prebuilt extractor; default builds it from the config.
  """
  if patch_feature_extractor is None:
    patch_feature_extractor = patch_features.build_patch_feature_extractor(model_config)
  feature_dim = int(patch_feature_extractor.feature_dim)
  if model_config.feature_dim and feature_dim != model_config.feature_dim:
    raise ValueError(
        f"model.feature_dim={model_config.feature_dim} but backbone {model_config.backbone!r} "
        f"gives {feature_dim}-d patch features")
  initializer = tf_keras.initializers.TruncatedNormal(stddev=model_config.initializer_range)
  activation = encoder_lib.get_activation(sizes.activation)
  encoder = build_encoder(sizes, model_config)
  # BertEncoderV2 creates its variables on first call; the tied MLM head needs the word embeddings.
  text = dummy_batch(feature_dim)
  encoder(dict(input_word_ids=text["input_word_ids"], input_mask=text["input_mask"],
               input_type_ids=text["input_type_ids"]))
  if model_config.patch_embedding == "easytransfer":
    patch_embedding = easytransfer_embedding.EasyTransferPatchEmbedding(
        hidden_size=sizes.hidden_size, feature_dim=feature_dim,
        dropout_rate=model_config.dropout_rate,
        initializer=initializer, name="patch_embedding")
  else:
    patch_embedding = patch_embedding_lib.PatchEmbedding(
        embedding_width=sizes.embedding_width,
        type_embedding_layer=encoder.type_embedding_layer,
        initializer=initializer,
        name="patch_embedding")
  if model_config.mpm_head == "linear":
    mpm_head = easytransfer_embedding.LinearMaskedPatchHead(
        hidden_size=sizes.hidden_size, feature_dim=feature_dim, initializer=initializer,
        name="mpm")
  else:
    mpm_head = heads.MaskedPatchHead(
        hidden_size=sizes.hidden_size, feature_dim=feature_dim, activation=activation,
        initializer=initializer, name="mpm")
  model = FashionBertModel(
      encoder=encoder,
      patch_feature_extractor=patch_feature_extractor,
      patch_embedding=patch_embedding,
      mlm_head=heads.build_masked_lm_head(
          encoder.get_embedding_table(), activation=activation, initializer=initializer,
          output_trains_embeddings=model_config.mlm_output_trains_word_embeddings),
      mpm_head=mpm_head,
      tia_head=heads.TextImageAlignmentHead(initializer=initializer, name="tia"),
      patch_feature_normalization=patch_feature_normalization.build_patch_feature_normalization(
          model_config, feature_dim),
      name="fashionbert")
  model(text, training=False)
  return model


def build_fashionbert(model_config, load_pretrained_weights=True):
  """Builds FashionBERT per `model_config` (the `model` config section); see the module doc.

  Args:
    model_config: the `model` config section.
    load_pretrained_weights: False = take only the encoder sizes from the checkpoint and leave the
      variables freshly initialized: for restoring a FashionBERT checkpoint right after (evaluation,
      export), which overwrites them anyway.

  Raises:
    ValueError: unknown encoder format, inconsistent sizes, or a checkpoint that does not fit
      (the message names the variable).
    FileNotFoundError: the checkpoint (or its config.json) does not exist.
  """
  encoder_format = model_config.encoder_format
  if encoder_format not in ENCODER_FORMATS:
    raise ValueError(f"model.encoder_format: unknown format {encoder_format!r}; expected one of "
                     f"{', '.join(ENCODER_FORMATS)}")
  if encoder_format == "none":
    return build_model_from_sizes(encoder_sizes.sizes_from_config(model_config), model_config)

  pretrained = readers.read_pretrained_bert(
      encoder_format, model_config.encoder_checkpoint, activation=model_config.encoder_activation)
  sizes = dataclasses.replace(pretrained.sizes)
  if model_config.num_layers:
    if model_config.num_layers > pretrained.sizes.num_layers:
      raise ValueError(
          f"model.num_layers={model_config.num_layers} but the checkpoint {pretrained.source} has "
          f"only {pretrained.sizes.num_layers} layers")
    sizes.num_layers = model_config.num_layers
  logging.info("FashionBERT encoder from %s: %s (using %d of %d layers)", pretrained.source,
               sizes, sizes.num_layers, pretrained.sizes.num_layers)
  model = build_model_from_sizes(sizes, model_config)
  if not load_pretrained_weights:
    return model
  assign.assign_pretrained_bert(
      model, pretrained, load_heads=model_config.load_pretrained_heads)
  return model
