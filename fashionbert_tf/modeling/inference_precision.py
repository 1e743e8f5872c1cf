"""Inference precision: a bfloat16 copy of a trained FashionBERT for serving and evaluation.

`precision="float32"` (default) is the model as trained: exact (`float32_inference_copy`, below). `precision="bfloat16"` is
`bfloat16_inference_copy(model, model_config)`: a second FashionBERT with the same weights in which

  - every matmul of the encoder and of the patch projection (Q/K/V/output projections, FFN,
    `patch_embedding/projection`) runs in bfloat16 with its kernel and bias STORED in bfloat16:
    they are cast once, here, and saved as bfloat16 variables. Under a plain Keras `mixed_bfloat16`
    policy the float32 variables would be cast to bfloat16 at every call (per-call casting of
    every weight, ~14M values for 2 layers at BERT-base width), and an export would carry float32
    weights;
  - LayerNorm (embedding and per layer) runs in float32, as Keras mixed precision does;
  - the attention softmax runs in float32 (Keras' `mixed_bfloat16` would run it in bfloat16: its
    `MultiHeadAttention` softmax takes the layer's compute dtype); the scores are cast back to
    bfloat16 for the product with the values;
  - the pooler (tanh dense over [CLS]) and the TIA head run in float32 on the float32 encoder
    output, so P(match) = softmax(tia_logits)[1] is computed in float32, never rounded to bfloat16;
  - the patch backbone (the CNN of `compute_patch_features`) and the patch feature standardization
    stay float32: they produce the features, not the matching; evaluation computes them once per
    image anyway;
  - the word and type embedding tables stay float32 (a lookup gathers ~100 rows, then casts them: no
    per-call cast of the whole 30,522 x 768 table); the text position table (512 x 768), which the
    layer would cast whole at every call before slicing, is stored in bfloat16
    (`store_position_table_in_bfloat16`; same values, ~0.3 ms a call less at 2 layers).

The float32 inference model (`float32_inference_copy`) is the trained model with the encoder's
EinsumDense projections (Q/K/V, attention output, FFN in and out) computed as Reshape -> MatMul ->
BiasAdd -> Reshape on a flattened [in, out] kernel (`einsum_dense_as_matmul(..., batched=False)`):
the same arithmetic (P(match) equal to ~1e-7), in the form Grappler's remapper fuses into oneDNN's
`_MklNativeFusedMatMul`, where an `Einsum` runs through `_MklEinsum` plus a separate bias `AddV2`.
Measured (quiet 2-core Xeon, batch 1, 2 layers, BERT-base width, 102 positions, 2 threads, Keras
model in a tf.function): 23.3 -> 18.2 ms. The bfloat16 copy keeps its Einsums: there the MatMul
forms measured the same (12.3 ms Einsum, 12.5 ms MatMul + BiasAdd, 12.0-12.5 ms BatchMatMulV2;
oneDNN picks a non-AMX inner-product gemm for a bfloat16 MatMul: the SavedModel measured 18.2 ms
with MatMul + BiasAdd against 12.9 with Einsum; with TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 in the
serving process (reordered weights cached) 12.3-12.9 against 12.9-13.8, too little to make a
serving environment variable decide between 12 and 18 ms), as did XLA (24 ms) and GELU fused into
the FFN matmul (13.7).

Why bfloat16 and not float16: the CPUs this serves on (Xeon with AMX / AVX-512 BF16) multiply
bfloat16 natively through oneDNN, and bfloat16 keeps float32's exponent range (no loss scaling).
Measured parity (tests/test_inference_precision.py, tools/benchmark_inference.py): P(match) within
0.01 absolute of float32.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras

PRECISIONS = ("float32", "bfloat16")
_ALIASES = {"mixed_bfloat16": "bfloat16"}


def check_precision(precision, option="precision"):
  """The canonical precision name ("float32" | "bfloat16"; "mixed_bfloat16" = "bfloat16").

  Raises:
    ValueError: another value (the message names `option`).
  """
  canonical = _ALIASES.get(precision, precision)
  if canonical not in PRECISIONS:
    raise ValueError(f"{option} = {precision!r}; expected one of {', '.join(PRECISIONS)} "
                     "(or mixed_bfloat16, the same as bfloat16)")
  return canonical


def _copy_weights(source, target):
  """Copies `source`'s variables into `target` (same architecture) through a checkpoint.

  By object graph, not by variable order or name: layer names get uniquifying suffixes when two
  models are built in one process.
  """
  with tempfile.TemporaryDirectory(prefix="fashionbert_weights_") as folder:
    path = tf.train.Checkpoint(model=source).write(os.path.join(folder, "weights"))
    status = tf.train.Checkpoint(model=target).read(path)
    status.assert_existing_objects_matched()


def _set_float32(layer):
  """Makes `layer` and every layer inside it compute in float32 (its variables are float32)."""
  for sublayer in layer._flatten_layers(include_self=True):  # pylint: disable=protected-access
    sublayer._set_dtype_policy("float32")  # pylint: disable=protected-access


def _untrack(layer, variable):
  """Removes `variable` from `layer`'s weight lists (it was replaced; it is no longer read)."""
  for attribute in ("_trainable_weights", "_non_trainable_weights"):
    weights = getattr(layer, attribute, None)
    if weights is None:
      continue
    for index, weight in enumerate(weights):
      if weight is variable:
        del weights[index]
        break


def store_weights_in_bfloat16(layer):
  """Replaces the kernels and biases of every bfloat16-computing Dense / EinsumDense inside
  `layer` by bfloat16 variables holding the same values (cast once). Returns how many were replaced.
  """
  replaced = 0
  for sublayer in layer._flatten_layers(include_self=True):  # pylint: disable=protected-access
    if not isinstance(sublayer, (tf_keras.layers.Dense, tf_keras.layers.EinsumDense)):
      continue
    if sublayer.compute_dtype != "bfloat16":
      continue
    for name in ("kernel", "bias"):
      old = getattr(sublayer, name, None)
      if old is None:
        continue
      value = tf.cast(tf.convert_to_tensor(getattr(old, "_variable", old)), tf.bfloat16)
      new = tf.Variable(value, trainable=False, name=f"{name}_bfloat16")
      setattr(sublayer, name, new)
      _untrack(sublayer, old)
      replaced += 1
  return replaced


def _matmul_form(equation):
  """(input batch axes, contracted axes) of an EinsumDense `equation` that is a plain matmul.

  Returns None unless the equation reads `<batch><in>,<in><out>-><batch><out>` (the input's
  trailing axes are the kernel's leading ones, the output is the batch axes then the kernel's
  trailing axes): the form of every EinsumDense of BERT (Q/K/V "abc,cde->abde", attention output
  "abcd,cde->abe", FFN "abc,cd->abd").
  """
  try:
    operands, output = equation.split("->")
    source, kernel = operands.split(",")
  except ValueError:
    return None
  for split in range(1, len(source)):
    batch, contracted = source[:split], source[split:]
    if (kernel.startswith(contracted) and output == batch + kernel[len(contracted):]
        and len(set(source + kernel)) == len(batch) + len(kernel)):
      return len(batch), len(contracted)
  return None


def _matmul_call(layer, batch_rank, batched):
  """`layer.call` (an EinsumDense `<batch><in>,<in><out>-><batch><out>`) as a plain matmul.

  batched=False: Reshape [N, in] -> MatMul -> BiasAdd -> Reshape, the form Grappler's remapper
  fuses into one oneDNN `_MklNativeFusedMatMul` (MatMul + BiasAdd). batched=True: Reshape
  [<batch>, in] -> BatchMatMulV2 with the [in, out] kernel -> add bias -> Reshape; oneDNN runs it
  through its matmul primitive (AMX for bfloat16). The kernel and bias are stored flattened
  ([in, out], [out]; see `einsum_dense_as_matmul`).
  """
  output_tail = list(layer.full_output_shape[batch_rank:])

  def call(inputs):
    inputs = tf.convert_to_tensor(inputs)
    batch_shape = tf.shape(inputs)[:batch_rank]
    inputs_size = layer.kernel.shape[0]
    if batched:
      outputs = tf.matmul(tf.reshape(inputs, tf.concat([batch_shape, [inputs_size]], 0)),
                          layer.kernel)
      if layer.bias is not None:
        outputs = outputs + layer.bias
    else:
      outputs = tf.matmul(tf.reshape(inputs, [-1, inputs_size]), layer.kernel)
      if layer.bias is not None:
        outputs = tf.nn.bias_add(outputs, layer.bias)
    if layer.activation is not None:
      outputs = layer.activation(outputs)
    outputs = tf.reshape(outputs, tf.concat([batch_shape, output_tail], axis=0))
    outputs.set_shape(inputs.shape[:batch_rank].concatenate(output_tail))
    return outputs
  return call


def einsum_dense_as_matmul(layer, batched):
  """Makes every matmul-form EinsumDense inside `layer` compute as Reshape + MatMul + BiasAdd.

  Each such layer gets its kernel and bias replaced by new non-trainable variables holding the
  same values flattened to [in, out] / [out] (same dtype), and its `call` replaced by
  `_matmul_call` (`batched`: BatchMatMulV2 form, else 2-D MatMul + BiasAdd form; see there); the
  old variables are untracked. Inference only. Returns the number of layers
  changed.
  """
  changed = 0
  for sublayer in layer._flatten_layers(include_self=True):  # pylint: disable=protected-access
    if not isinstance(sublayer, tf_keras.layers.EinsumDense):
      continue
    form = _matmul_form(sublayer.equation)
    if form is None or not sublayer.built:
      continue
    batch_rank, contracted_rank = form
    kernel = sublayer.kernel
    kernel_value = tf.convert_to_tensor(getattr(kernel, "_variable", kernel))
    inputs_size = int(np.prod(kernel_value.shape[:contracted_rank]))
    kernel_value = tf.reshape(kernel_value, [inputs_size, -1])
    bias_value = None
    if sublayer.bias is not None:
      bias = sublayer.bias
      bias_value = tf.reshape(tf.convert_to_tensor(getattr(bias, "_variable", bias)), [-1])
      if bias_value.shape[0] != kernel_value.shape[1]:
        continue  # a bias over some output axes only: not a BiasAdd; keep the einsum
    for name, value in (("kernel", kernel_value), ("bias", bias_value)):
      old = getattr(sublayer, name)
      if old is None:
        continue
      setattr(sublayer, name, tf.Variable(value, trainable=False, name=f"matmul_{name}"))
      _untrack(sublayer, old)
    sublayer.call = _matmul_call(sublayer, batch_rank, batched)
    changed += 1
  return changed


def store_position_table_in_bfloat16(layer):
  """Stores the table of every bfloat16-computing Model Garden `PositionEmbedding` inside `layer`
  in bfloat16 (cast once). Returns how many were replaced.

  The layer slices its first T rows; from a float32 variable under a bfloat16 policy it casts the
  whole [512, E] table at every call first (~0.3 ms a call at E = 768 on 2 cores, the largest
  single cast of the bfloat16 graph). Same values: the call rounded them to bfloat16 anyway.
  """
  from official.nlp.modeling import layers as nlp_layers  # pylint: disable=g-import-not-at-top
  replaced = 0
  for sublayer in layer._flatten_layers(include_self=True):  # pylint: disable=protected-access
    if (not isinstance(sublayer, nlp_layers.PositionEmbedding)
        or sublayer.compute_dtype != "bfloat16"):
      continue
    old = sublayer._position_embeddings  # pylint: disable=protected-access
    value = tf.cast(tf.convert_to_tensor(getattr(old, "_variable", old)), tf.bfloat16)
    sublayer._position_embeddings = tf.Variable(  # pylint: disable=protected-access
        value, trainable=False, name="embeddings_bfloat16")
    _untrack(sublayer, old)
    replaced += 1
  return replaced


def softmax_in_float32(layer):
  """Every Keras MultiHeadAttention inside `layer` computes its softmax in float32. Returns the
  number of attention layers changed."""
  changed = 0
  for sublayer in layer._flatten_layers(include_self=True):  # pylint: disable=protected-access
    softmax = getattr(sublayer, "_softmax", None)
    if (isinstance(sublayer, tf_keras.layers.MultiHeadAttention)
        and isinstance(softmax, tf_keras.layers.Softmax)):
      sublayer._softmax = tf_keras.layers.Softmax(axis=softmax.axis, dtype="float32")  # pylint: disable=protected-access
      changed += 1
  return changed


def bfloat16_inference_copy(model, model_config):
  """A bfloat16 inference copy of `model` (see the module docstring); `model` is not changed.

  Args:
    model: a built `FashionBertModel` (float32, weights trained or restored).
    model_config: the `model` config section it was built from.

  Returns:
    a `FashionBertModel` for inference only (its replaced weights are not trainable).
  """
  from fashionbert_tf.modeling import model_builder  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.training import strategies  # pylint: disable=g-import-not-at-top
  with strategies.precision_policy("mixed_bfloat16", option="precision"):
    copy = model_builder.build_fashionbert(model_config, load_pretrained_weights=False)
  _copy_weights(model, copy)
  _set_float32(copy.patch_feature_extractor)
  if copy.patch_feature_normalization is not None:
    _set_float32(copy.patch_feature_normalization)
  _set_float32(copy.encoder.pooler_layer)
  _set_float32(copy.tia_head)
  replaced = store_weights_in_bfloat16(copy.encoder) + store_weights_in_bfloat16(
      copy.patch_embedding)
  if not replaced:
    raise ValueError("bfloat16 inference copy: no Dense/EinsumDense layer found to convert")
  softmax_in_float32(copy.encoder)
  store_position_table_in_bfloat16(copy.encoder)
  return copy


def float32_inference_copy(model, model_config):
  """A float32 inference copy of `model` whose encoder projections run as MatMul + BiasAdd.

  Same weights, same function (see the module docstring); `model` is not changed.
  """
  from fashionbert_tf.modeling import model_builder  # pylint: disable=g-import-not-at-top
  copy = model_builder.build_fashionbert(model_config, load_pretrained_weights=False)
  _copy_weights(model, copy)
  if not einsum_dense_as_matmul(copy.encoder, batched=False):
    raise ValueError("float32 inference copy: no EinsumDense layer found to convert")
  return copy


def inference_model(model, model_config, precision):
  """Its `float32_inference_copy` for float32, its `bfloat16_inference_copy` for bfloat16."""
  precision = check_precision(precision)
  if precision == "float32":
    return float32_inference_copy(model, model_config)
  return bfloat16_inference_copy(model, model_config)
