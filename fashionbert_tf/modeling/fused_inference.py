"""FashionBERT's P(match) as one inference graph of fused oneDNN ops (serving and evaluation).

`FusedScoringModel(model, precision)` computes what the trained `FashionBertModel` computes for
TIA in inference mode (patch features -> standardization -> patch embedding; text embeddings;
embedding LayerNorm; the transformer layers; pooler; TIA head), written as plain TensorFlow ops in
the forms Grappler's remapper and oneDNN fuse, with every matmul kernel of the encoder, the patch
embedding, the pooler and the TIA head a graph constant:

  - each dense layer is a 2-D MatMul + BiasAdd on [B * S, in] with its kernel a Const (its bias a
    variable, see `__init__`): Grappler fuses it (with the GELU that follows) into
    `_MklNativeFusedMatMul`, and because the kernel is a Const (`is_filter_const`) oneDNN reorders
    it into its blocked (AMX) layout once and caches it instead of re-packing it at every call, as
    it does for a variable;
  - the Q, K and V projections are one MatMul over the concatenated [H, 3H] kernel and one
    Transpose puts the three in head-major order (Model Garden: three EinsumDense + transposes);
    the query scale 1/sqrt(head size) is folded into the Q kernel and bias;
  - LayerNorm is computed in float32 in the form of Keras' fused LayerNormalization (a
    training-mode FusedBatchNormV3 over the reshaped rows), which oneDNN runs as one batch-norm
    kernel with BERT's epsilon (`_layer_norm`);
  - only the [CLS] position goes through the last layer's query, attention output and feed-forward
    (its keys and values still come from every position): nothing else of the last layer reaches
    P(match). Model Garden's `output_range=1`, the same numbers.

Precision: "float32" keeps every weight and op in float32 (P(match) equal to the Keras model's up
to float rounding, ~1e-6; tests/test_fused_inference.py); "bfloat16" stores the matmul kernels and
biases in bfloat16 and multiplies in bfloat16 (oneDNN accumulates in float32, and a fused GELU runs
on the float32 accumulator), while the embedding sums, every LayerNorm, the attention softmax (and
its mask), the pooler and the TIA head stay float32, as Keras mixed precision keeps them, so
P(match) = softmax(tia_logits)[1] is never rounded to bfloat16.

Variables (what an export saves as variables): the word embedding table (read by a gather of ~100
rows), the biases (and the kernels under XLA: `constant_kernels`), and the patch backbone's (`compute_patch_features` is the Keras model's,
float32: evaluation runs it once per image). The Keras model itself is held untracked, so a
SavedModel does not trace it.

Measured (2-core Xeon with AMX, batch 1, BERT-base width, 38 WordPieces + 64 patches;
tools/benchmark_inference.py, docs/benchmarks/README.md): the SavedModel's `score_features` in bfloat16 through
this graph 9.0 / 24.6 / 53.4 ms at 2 / 6 / 12 layers against 23.7 / 65.3 / 134.0 ms for the
float32 export (the Keras model) in the same run; the bfloat16 Keras copy it replaced measured
0.66-0.69x float32. In a prototype of the graph (2 layers): Const kernels instead of variables
(oneDNN caches the packed weights) with GELU fused into the FFN matmul ~15 -> ~9 ms, one Q/K/V
matmul ~-1 ms, the LayerNorm form ~-1 ms. The same graph in float32: ~13 ms at 2 layers.
"""

import math

import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.modeling import easytransfer_embedding
from fashionbert_tf.modeling import encoder as encoder_lib
from fashionbert_tf.utils import untracked

PRECISIONS = ("float32", "bfloat16")
# Added to the attention scores of padding positions before the softmax, as Keras' masked softmax
# does for float32 scores: exp() of it is exactly 0.
_MASK_NEGATIVE = -1e9
# The ops for `_dense`'s activations (the feed-forward's by `model.encoder_activation` name).
_ACTIVATION_OPS = {
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "gelu_approximate": lambda x: tf.nn.gelu(x, approximate=True),
    "relu": tf.nn.relu,
    "tanh": tf.math.tanh,
}
# The (kernel, bias) entries of `_block_weights` (query_key_value, or query and key_value).
_BLOCK_DENSE_LAYERS = ("query_key_value", "query", "key_value", "attention_output", "inner",
                       "output")


def _numpy(variable):
  return np.asarray(tf.convert_to_tensor(getattr(variable, "_variable", variable)))


def _activation_kind(block):
  """The feed-forward activation of `block` by its `model.encoder_activation` name (the first
  name registered for its function: "gelu" (erf), "gelu_approximate" (tanh) or "relu")."""
  function = getattr(block._intermediate_activation_layer, "activation", None)  # pylint: disable=protected-access
  name = encoder_lib.activation_name(function)
  if name not in _ACTIVATION_OPS:
    raise ValueError(f"fused inference: unsupported encoder activation {function!r} (known: "
                     f"{', '.join(_ACTIVATION_OPS)})")
  return name


def _check_block(block):
  """Raises ValueError for a transformer block this graph does not reproduce."""
  unsupported = {
      "norm_first (pre-LayerNorm)": getattr(block, "_norm_first", False),
      "use_rms_norm": getattr(block, "_use_rms_norm", False),
      "no query residual": not getattr(block, "_use_query_residual", True),
      "linformer": getattr(block, "_linformer_dim", None) is not None,
      "sigmoid attention": getattr(block, "_use_sigmoid_attn", False),
      "grouped key/value heads": getattr(block, "_num_kv_heads", None) is not None,
  }
  found = [name for name, on in unsupported.items() if on]
  if found:
    raise ValueError(f"fused inference: transformer block {block.name} uses {', '.join(found)}; "
                     "only BERT's post-LayerNorm block is supported")


def _dense_weights(einsum_dense):
  """An EinsumDense / Dense kernel and bias flattened to float32 [in, out] and [out]."""
  kernel = _numpy(einsum_dense.kernel)
  bias = _numpy(einsum_dense.bias)
  out = bias.size
  return kernel.reshape(-1, out).astype(np.float32), bias.reshape(out).astype(np.float32)


def _layer_norm_weights(layer):
  return dict(gamma=_numpy(layer.gamma).astype(np.float32),
              beta=_numpy(layer.beta).astype(np.float32), epsilon=float(layer.epsilon))


def _block_weights(block, cls_only):
  """The float32 numpy weights of one Model Garden `TransformerEncoderBlock` (post-LN BERT).

  cls_only (the last layer): the Q projection and the K/V projection apart (only [CLS] is
  queried); else one Q/K/V projection.
  """
  _check_block(block)
  attention = block._attention_layer  # pylint: disable=protected-access
  num_heads = int(attention._num_heads)  # pylint: disable=protected-access
  head_size = int(attention._key_dim)  # pylint: disable=protected-access
  if int(attention._value_dim or head_size) != head_size:  # pylint: disable=protected-access
    raise ValueError("fused inference: attention value size != key size is not supported")
  query_kernel, query_bias = _dense_weights(attention._query_dense)  # pylint: disable=protected-access
  key_kernel, key_bias = _dense_weights(attention._key_dense)  # pylint: disable=protected-access
  value_kernel, value_bias = _dense_weights(attention._value_dense)  # pylint: disable=protected-access
  scale = 1.0 / math.sqrt(float(head_size))  # Model Garden scales the query before the product.
  query = (query_kernel * scale, query_bias * scale)
  key_value = (np.concatenate([key_kernel, value_kernel], axis=1),
               np.concatenate([key_bias, value_bias]))
  weights = dict(
      num_heads=num_heads, head_size=head_size, activation=_activation_kind(block),
      attention_output=_dense_weights(attention._output_dense),  # pylint: disable=protected-access
      attention_norm=_layer_norm_weights(block._attention_layer_norm),  # pylint: disable=protected-access
      inner=_dense_weights(block._intermediate_dense),  # pylint: disable=protected-access
      output=_dense_weights(block._output_dense),  # pylint: disable=protected-access
      output_norm=_layer_norm_weights(block._output_layer_norm))  # pylint: disable=protected-access
  if cls_only:
    weights.update(query=query, key_value=key_value)
  else:
    weights["query_key_value"] = (np.concatenate([query[0], key_value[0]], axis=1),
                                  np.concatenate([query[1], key_value[1]]))
  return weights


class FusedScoringModel(tf.Module):
  """P(match) of a trained FashionBERT through the fused inference graph (module docstring).

  Called like the Keras model for scoring: `model(inputs, training=False)` with a dict holding
  `input_word_ids`, `input_mask`, `input_type_ids` int32 [B, T] and `patch_features` float32
  [B, 64, D] returns {"tia_logits": float32 [B, 2]}; `compute_patch_features(image uint8
  [B, 256, 256, 3]) -> float32 [B, 64, D]` is the Keras model's backbone. Inference only.
  """

  def __init__(self, model, precision="bfloat16", constant_kernels=True,
               name="fused_fashionbert"):
    """Args:
      model: a built, trained `FashionBertModel` (float32; it is not changed).
      precision: "float32" or "bfloat16" (module docstring).
      constant_kernels: matmul kernels as graph constants (module docstring). False stores them
        as variables (in the matmul's dtype): for XLA (`jit_compile`), which would otherwise
        constant-fold every kernel while compiling (XLA's CPU backend converts bfloat16 dots to
        float32): a 12-layer bfloat16 export then took > 24 GB and was killed, measured.

    Raises:
      ValueError: unknown precision, or an encoder this graph does not reproduce (pre-LN, RMSNorm,
        linformer, an unknown activation, ...).
    """
    super().__init__(name=name)
    if precision not in PRECISIONS:
      raise ValueError(f"fused inference: precision {precision!r}; expected one of "
                       f"{', '.join(PRECISIONS)}")
    self.precision = precision
    self.constant_kernels = bool(constant_kernels)
    self._dtype = tf.bfloat16 if precision == "bfloat16" else tf.float32
    self._keras = untracked.Untracked(model)
    encoder = model.encoder
    # Tracked: the export saves these as variables (the gather reads ~100 rows of the table; the
    # backbone is the Keras model's own).
    self.word_embeddings = encoder._embedding_layer.embeddings  # pylint: disable=protected-access
    self.backbone_variables = list(model.patch_feature_extractor.variables)
    # Biases are variables (in their matmul's dtype) even with constant kernels: a constant bias
    # that is all zeros (a fresh model's) would be folded away by Grappler, and without its
    # BiasAdd the matmul is neither fused nor given the cached packed kernel (measured 27 -> 37 ms
    # at 6 layers).
    self.dense_variables = []
    self._weights = untracked.Untracked(self._with_variables(self._collect_weights(model)))

  def _with_variables(self, weights):
    """`weights` with each dense layer's numpy bias (and, without constant kernels, kernel)
    replaced by a variable in its matmul's dtype."""
    def variable(value, dtype, name):
      self.dense_variables.append(tf.Variable(tf.cast(value, dtype), trainable=False, name=name))
      return self.dense_variables[-1]

    def convert(kernel_and_bias, dtype):
      kernel, bias = kernel_and_bias
      if not self.constant_kernels:
        kernel = variable(kernel, dtype, "kernel")
      return kernel, variable(bias, dtype, "bias")
    weights["patch_projection"] = convert(weights["patch_projection"], self._dtype)
    for block in weights["blocks"]:
      for key in _BLOCK_DENSE_LAYERS:
        if key in block:
          block[key] = convert(block[key], self._dtype)
    for key in ("pooler", "tia"):  # float32 (module docstring)
      weights[key] = convert(weights[key], tf.float32)
    return weights

  def _collect_weights(self, model):
    encoder = model.encoder
    layers = encoder._transformer_layers  # pylint: disable=protected-access
    patch_embedding = model.patch_embedding
    type_table = _numpy(encoder.type_embedding_layer.embeddings).astype(np.float32)
    if getattr(patch_embedding, "output_is_normalized", False):
      # model.patch_embedding "easytransfer": projection without bias + position + its own image
      # type row, then its own LayerNorm (easytransfer_embedding.py).
      projector = _numpy(patch_embedding.image_projector).astype(np.float32)
      patch_projection = (projector, np.zeros([projector.shape[1]], np.float32))
      image_segment = _numpy(patch_embedding.patch_type_embeddings).astype(np.float32)[
          easytransfer_embedding.IMAGE_TYPE_ID]
      patch_norm = _layer_norm_weights(patch_embedding.layer_norm)
    else:
      patch_projection = _dense_weights(patch_embedding.projection)
      image_segment = type_table[1]  # patch_embedding.IMAGE_SEGMENT_ID
      patch_norm = None
    weights = dict(
        position_table=_numpy(encoder._position_embedding_layer._position_embeddings).astype(  # pylint: disable=protected-access
            np.float32),
        type_table=type_table,
        embedding_norm=_layer_norm_weights(encoder._embedding_norm_layer),  # pylint: disable=protected-access
        patch_projection=patch_projection,
        patch_norm=patch_norm,
        # Paper 2.2: patch k's embedding adds its patch position row and the image segment row.
        patch_position_and_segment=(
            _numpy(patch_embedding.patch_position_embeddings).astype(np.float32) + image_segment),
        pooler=_dense_weights(encoder.pooler_layer),
        tia=_dense_weights(model.tia_head.classifier),
        blocks=[_block_weights(block, cls_only=index == len(layers) - 1)
                for index, block in enumerate(layers)],
        feature_mean=None, feature_scale=None)
    if not weights["blocks"]:
      raise ValueError("fused inference: the encoder has no transformer layer")
    if encoder._embedding_projection is not None:  # pylint: disable=protected-access
      raise ValueError("fused inference: factorized embeddings (embedding width != hidden size) "
                       "are not supported")
    normalization = model.patch_feature_normalization
    if normalization is not None:
      weights["feature_mean"] = _numpy(normalization.mean).astype(np.float32)
      weights["feature_scale"] = 1.0 / _numpy(normalization.std).astype(np.float32)
    return weights

  @property
  def keras_model(self):
    return self._keras.value

  @property
  def patch_feature_extractor(self):
    """The Keras model's backbone layer (its `feature_dim` is D)."""
    return self.keras_model.patch_feature_extractor

  def compute_patch_features(self, image):
    """The backbone alone: uint8 [B, 256, 256, 3] -> float32 [B, 64, D] (the Keras model's)."""
    return self.keras_model.compute_patch_features(image)

  @tf.autograph.experimental.do_not_convert
  def __call__(self, inputs, training=False):
    """{"tia_logits": float32 [B, 2]} for the dict `inputs` (class docstring)."""
    if training:
      raise ValueError("FusedScoringModel is for inference only (training=True)")
    logits = self.tia_logits(inputs["input_word_ids"], inputs["input_mask"],
                             inputs["input_type_ids"], inputs[contract.FEATURES_KEY])
    return {"tia_logits": logits}

  # ---- the graph ---------------------------------------------------------------------------------

  def _constant(self, value, dtype=tf.float32):
    """A graph Const of `value` (float32 numpy) in `dtype` (cast here, once, not in the graph)."""
    if dtype == tf.float32:
      return tf.constant(value, tf.float32)
    with tf.init_scope():  # Eagerly, also while a tf.function traces.
      value = tf.cast(tf.constant(value, tf.float32), dtype).numpy()
    return tf.constant(value)

  def _dense(self, inputs, kernel_and_bias, dtype, activation=None):
    """[N, in] -> [N, out]: MatMul on the kernel (a Const in `dtype`, or its variable) + BiasAdd
    (its bias variable) (+ activation)."""
    kernel, bias = kernel_and_bias
    if not isinstance(kernel, tf.Variable):
      kernel = self._constant(kernel, dtype)
    outputs = tf.nn.bias_add(tf.matmul(inputs, kernel), bias)
    return _ACTIVATION_OPS[activation](outputs) if activation else outputs

  def _layer_norm(self, inputs, norm, rows):
    """LayerNorm over the last axis of inputs [N, H] (rows = N) in float32; returns the input's
    dtype.

    Written as Keras' fused LayerNormalization writes it (reshape to [1, N, H, 1], a training-mode
    FusedBatchNormV3 over N "channels", reshape back, * gamma + beta): oneDNN runs it as one
    batch-norm kernel with the given epsilon. Not the mean / squared-difference / rsqrt form:
    Grappler's remapper replaces that one by `_MklLayerNorm` with epsilon 1e-3 whatever the graph
    adds (TensorFlow 2.20, measured), which is wrong for BERT's 1e-12 (tests/
    test_fused_inference.py fails with it).
    """
    dtype = inputs.dtype
    width = inputs.shape[-1]
    # `rows` comes from the caller, not from tf.shape(inputs): the same `rows` gives the same
    # Fill ops, which Grappler then shares between the LayerNorms (fewer ops a call).
    normalized, _, _ = tf.compat.v1.nn.fused_batch_norm(
        tf.reshape(tf.cast(inputs, tf.float32), [1, -1, width, 1]), tf.fill([rows], 1.0),
        tf.fill([rows], 0.0), epsilon=norm["epsilon"], data_format="NCHW", is_training=True)
    outputs = self._constant(norm["beta"]) + (
        tf.reshape(normalized, [-1, width]) * self._constant(norm["gamma"]))
    return tf.cast(outputs, dtype)

  def _attention(self, queries, keys, values, mask_adder):
    """Multi-head attention on head-major [B, heads, Q or S, size] -> context [B, heads, Q, size].

    The query is pre-scaled (its kernel); scores, mask and softmax in float32, the products with
    the keys and values in the graph's dtype.
    """
    scores = tf.matmul(queries, keys, transpose_b=True)  # [B, heads, Q, S]
    probabilities = tf.nn.softmax(tf.cast(scores, tf.float32) + mask_adder, axis=-1)
    return tf.matmul(tf.cast(probabilities, self._dtype), values)

  def _block(self, hidden, mask_adder, block, batch, length):
    """One post-LN transformer block on hidden [B * S, H] -> [B * S, H].

    The last block (`_block_weights(cls_only=True)`: it has a "query" projection of its own)
    computes only [CLS] past the key / value projection and returns [B, H].
    """
    dtype = self._dtype
    heads, size = block["num_heads"], block["head_size"]
    if "query" in block:
      residual = tf.reshape(hidden, [batch, length, heads * size])[:, 0, :]  # [B, H]
      queries = tf.reshape(self._dense(residual, block["query"], dtype),
                           [batch, heads, 1, size])
      keys_values = tf.transpose(
          tf.reshape(self._dense(hidden, block["key_value"], dtype),
                     [batch, length, 2, heads, size]), [2, 0, 3, 1, 4])  # [2, B, heads, S, size]
      keys, values = tf.unstack(keys_values, axis=0)
      query_length = 1
    else:
      residual = hidden
      projections = tf.transpose(
          tf.reshape(self._dense(hidden, block["query_key_value"], dtype),
                     [batch, length, 3, heads, size]), [2, 0, 3, 1, 4])  # [3, B, heads, S, size]
      queries, keys, values = tf.unstack(projections, axis=0)
      query_length = length
    context = self._attention(queries, keys, values, mask_adder)  # [B, heads, Q, size]
    context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, heads * size])
    attention = self._dense(context, block["attention_output"], dtype)
    rows = batch * query_length
    hidden = self._layer_norm(residual + attention, block["attention_norm"], rows)
    inner = self._dense(hidden, block["inner"], dtype, activation=block["activation"])
    output = self._dense(inner, block["output"], dtype)
    return self._layer_norm(hidden + output, block["output_norm"], rows)

  @tf.autograph.experimental.do_not_convert
  def tia_logits(self, input_word_ids, input_mask, input_type_ids, patch_features):
    """float32 [B, 2] TIA logits; text int32 [B, T], patch_features float [B, 64, D]."""
    weights = self._weights.value
    dtype = self._dtype
    batch = tf.shape(input_word_ids)[0]
    text_length = tf.shape(input_word_ids)[1]
    length = text_length + contract.NUM_PATCHES

    # Text embeddings, float32 [B, T, E]: word + position (0..T-1) + segment.
    text = (tf.gather(self.word_embeddings, input_word_ids)
            + self._constant(weights["position_table"])[tf.newaxis, :text_length, :]
            + tf.gather(self._constant(weights["type_table"]), input_type_ids))
    # Patch embeddings, float32 [B, 64, E]: standardized features -> projection + position + "I".
    # The standardization runs in float32 before the cast. Folded into the projection, the raw
    # features (mean >> std in some dimensions) were rounded to bfloat16 before the mean was
    # taken off, and the folded bias -(mean / std) W was large: on the demo model's 21,052
    # evaluation pairs |P(match) - float32| reached 0.094 (3.5% of pairs > 0.01), against 0.030
    # (0.5%) this way; the bfloat16 Keras copy before it: 0.079 (1.2%).
    features = tf.cast(patch_features, tf.float32)
    if weights["feature_mean"] is not None:
      features = (features - self._constant(weights["feature_mean"])) * self._constant(
          weights["feature_scale"])
    feature_dim, width = weights["patch_projection"][0].shape
    patches = self._dense(tf.cast(tf.reshape(features, [-1, feature_dim]), dtype),
                          weights["patch_projection"], dtype)
    patches = (tf.cast(tf.reshape(patches, [batch, contract.NUM_PATCHES, width]), tf.float32)
               + self._constant(weights["patch_position_and_segment"]))
    if weights["patch_norm"] is None:   # one embedding LayerNorm over [text; patches]
      embeddings = tf.concat([text, patches], axis=1)  # [B, S, E]
      hidden = self._layer_norm(tf.reshape(embeddings, [-1, width]), weights["embedding_norm"],
                                batch * length)
    else:                               # easytransfer: each part its own LayerNorm
      text = self._layer_norm(tf.reshape(text, [-1, width]), weights["embedding_norm"],
                              batch * text_length)
      patches = self._layer_norm(tf.reshape(patches, [-1, width]), weights["patch_norm"],
                                 batch * contract.NUM_PATCHES)
      hidden = tf.reshape(tf.concat([tf.reshape(text, [batch, text_length, width]),
                                     tf.reshape(patches, [batch, contract.NUM_PATCHES, width])],
                                    axis=1), [-1, width])
    hidden = tf.cast(hidden, dtype)

    # Keys of text padding get -1e9 before the softmax; patches are always attended to.
    mask = tf.concat([tf.cast(input_mask, tf.float32),
                      tf.ones([batch, contract.NUM_PATCHES], tf.float32)], axis=1)
    mask_adder = ((1.0 - mask) * _MASK_NEGATIVE)[:, tf.newaxis, tf.newaxis, :]  # [B, 1, 1, S]
    for block in weights["blocks"]:  # the last one returns [B, H], [CLS] only
      hidden = self._block(hidden, mask_adder, block, batch, length)
    cls = tf.cast(hidden, tf.float32)  # [B, H]
    pooled = self._dense(cls, weights["pooler"], tf.float32, activation="tanh")
    return self._dense(pooled, weights["tia"], tf.float32)
