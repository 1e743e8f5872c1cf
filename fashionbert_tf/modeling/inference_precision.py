"""Inference precision: the model that evaluation and export score with.

`inference_model(model, model_config, precision)`:
  - "float32" (default): `float32_inference_copy`, the trained Keras model with the encoder's
    EinsumDense projections (Q/K/V, attention output, FFN in and out) computed as Reshape ->
    MatMul -> BiasAdd -> Reshape on a flattened [in, out] kernel (`einsum_dense_as_matmul(...,
    batched=False)`): the same arithmetic (P(match) equal to ~1e-7), in the form Grappler's
    remapper fuses into oneDNN's `_MklNativeFusedMatMul`, where an `Einsum` runs through
    `_MklEinsum` plus a separate bias `AddV2`. Measured (quiet 2-core Xeon, batch 1, 2 layers,
    BERT-base width, 102 positions, 2 threads, Keras model in a tf.function): 23.3 -> 18.2 ms.
  - "bfloat16": `fused_inference.FusedScoringModel(model, "bfloat16")`, the fused inference graph
    with bfloat16 matmuls and float32 embedding sums, LayerNorm, softmax, pooler and TIA head (see
    its module docstring; P(match) within 0.01 of float32 on the test models,
    tests/test_inference_precision.py); with `jit_compile` its kernels are variables
    (`constant_kernels=False`). It replaced a Keras copy of the model under a `mixed_bfloat16`
    policy with bfloat16 variables: 0.66-0.69x the float32 export's batch-1 latency against
    0.38-0.40x for the fused graph (docs/benchmarks/README.md).

Why bfloat16 and not float16: the CPUs this serves on (Xeon with AMX / AVX-512 BF16) multiply
bfloat16 natively through oneDNN, and bfloat16 keeps float32's exponent range (no loss scaling).
"""

import os
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras

from fashionbert_tf.modeling import fused_inference
from fashionbert_tf.modeling import model_builder

PRECISIONS = fused_inference.PRECISIONS
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


def float32_inference_copy(model, model_config):
  """A float32 inference copy of `model` whose encoder projections run as MatMul + BiasAdd.

  Same weights, same function (see the module docstring); `model` is not changed.
  """
  copy = model_builder.build_fashionbert(model_config, load_pretrained_weights=False)
  _copy_weights(model, copy)
  if not einsum_dense_as_matmul(copy.encoder, batched=False):
    raise ValueError("float32 inference copy: no EinsumDense layer found to convert")
  return copy


def inference_model(model, model_config, precision, jit_compile=False):
  """Its `float32_inference_copy` for float32, its fused bfloat16 graph for bfloat16.

  jit_compile: the model will be scored in an XLA-compiled function (the fused graph then keeps
  its kernels as variables: `FusedScoringModel(constant_kernels=False)`).
  """
  precision = check_precision(precision)
  if precision == "float32":
    return float32_inference_copy(model, model_config)
  return fused_inference.FusedScoringModel(model, "bfloat16", constant_kernels=not jit_compile)
