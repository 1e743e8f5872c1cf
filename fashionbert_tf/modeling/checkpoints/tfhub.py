"""Reads a TF-Hub BERT SavedModel (a directory or a TF-Hub handle) into the canonical table.

TF2 SavedModels as exported by Model Garden's `official.nlp.tools.export_tfhub_lib` (e.g.
bert_en_uncased_L-12_H-768_A-12). The weights are read by name from the SavedModel's variables
checkpoint; the SavedModel itself is loaded offline (`tf.saved_model.load`) only to verify the
loaded encoder against its own outputs (`verify_against_saved_model`).
"""

import os
import re
import socket

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.modeling.checkpoints import canonical_table
from fashionbert_tf.modeling.checkpoints import object_checkpoint

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
  # Lazy: tensorflow_hub costs about a second at import (python -X importtime) and only handles
  # need it.
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
  weights, origins = object_checkpoint.read_object_checkpoint(
      os.path.join(path, "variables", "variables"), source)
  sizes = canonical_table.sizes_from_weights(weights, activation, source)
  return canonical_table.PretrainedBert(sizes=sizes, weights=weights, origins=origins,
                                        source=source, reference_saved_model=path)


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
    raise canonical_table.CheckpointMismatchError(
        f"{pretrained.source}: the loaded encoder does not reproduce the SavedModel's outputs (max "
        f"difference {diff:.3g} > {tolerance}); is model.encoder_activation right (now "
        f"{pretrained.sizes.activation!r})?")
  logging.info("%s: loaded encoder matches the SavedModel (max difference %.3g)", pretrained.source,
               diff)
