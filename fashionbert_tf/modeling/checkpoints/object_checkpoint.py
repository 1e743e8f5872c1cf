"""Reads the BERT variables of an object-based TF2 checkpoint by the names they were saved under.

Shared by the TF-Hub reader (a SavedModel's variables checkpoint) and the Model Garden reader.
"""

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from fashionbert_tf.modeling.checkpoints import canonical_table


def read_object_checkpoint(prefix, source):
  """Canonical weights of an object-based TF2 checkpoint, by the variables' saved names.

  Returns (weights, origins): canonical name -> float32 array / checkpoint key. Optimizer slots
  are skipped.
  """
  reader = tf.train.load_checkpoint(prefix)
  if not reader.has_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"):
    raise canonical_table.CheckpointMismatchError(
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
      name = canonical_table.canonical_name(attribute.full_name)
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
    raise canonical_table.CheckpointMismatchError(f"{source}: no BERT encoder variables found")
  return weights, origins
