"""Reads a Model Garden TF2 (object-based) BERT checkpoint into the canonical table.

E.g. `tf.train.Checkpoint(encoder=BertEncoderV2)`, `tf.train.Checkpoint(model=BertEncoder)` from
`tf2_bert_encoder_checkpoint_converter` / `tf1_bert_checkpoint_converter_lib`, a BertPretrainerV2
checkpoint, or a FashionBERT run; a checkpoint prefix or a directory (its latest checkpoint).
"""

import os

import tensorflow as tf

from fashionbert_tf.modeling.checkpoints import canonical_table
from fashionbert_tf.modeling.checkpoints import object_checkpoint


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
  weights, origins = object_checkpoint.read_object_checkpoint(prefix, source)
  sizes = canonical_table.sizes_from_weights(weights, activation, source)
  return canonical_table.PretrainedBert(sizes=sizes, weights=weights, origins=origins,
                                        source=source)
