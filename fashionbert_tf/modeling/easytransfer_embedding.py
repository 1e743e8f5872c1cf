"""The authors' image-embedding layout (EasyTransfer FashionBERT), as an option of our model.

Two layouts of the patch tokens exist (`model.patch_embedding`):

  fashionbert (default; `patch_embedding.py`): Dense_E(feature) + patch position row + the
    encoder's type row 1, then the encoder's one embedding LayerNorm over [text; patches]. It
    shares the text's type table and LayerNorm, so a text BERT checkpoint initializes all but the
    projection and the patch position table.
  easytransfer (this module): the layout of the released FashionBERT checkpoint
    (EasyTransfer `modeling_imagebert.py`, `bert/image_embeddings/`), needed to run the authors'
    weights exactly:
      dropout(feature) @ image_projector            [D, H], no bias
      + patch_position_embeddings[k]                [64, H]
      + patch_type_embeddings[1]                    [2, H], a table of the image's own
      -> LayerNorm of its own (ImageEmbLayerNorm, epsilon 1e-12) -> dropout.
    The text embeddings are BERT's (word + position + type -> LayerNorm -> dropout); the two
    sequences are concatenated after their own LayerNorms, so the encoder must not normalize the
    patches again: `SeparatelyNormalizedEncoder`.

Both are trainable, evaluable and exportable the same way; the default stays ours because it
starts from a text-only BERT with fewer new parameters, and this one exists to import, evaluate
and continue training the authors' model.

With it comes their masked-patch head (`model.mpm_head: linear`): `LinearMaskedPatchHead`,
logits = gathered patch outputs @ output_weights [H, D] with no bias and no transform
(`cls/img_predictions/output_weights`).
"""

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils

from fashionbert_tf.data import contract
from fashionbert_tf.modeling import encoder as encoder_lib

IMAGE_TYPE_ID = 1  # Their patch type ids are all 1; row 0 of `patch_type_embeddings` is unused.
LAYER_NORM_EPSILON = 1e-12  # tf.contrib.layers.layer_norm's, which their LayerNorms use.


class EasyTransferPatchEmbedding(tf_keras.layers.Layer):
  """Patch features [B, 64, D] -> complete, normalized patch embeddings [B, 64, H].

  embedding_k = LayerNorm(dropout(f_k) @ image_projector + patch_position_embeddings[k]
                          + patch_type_embeddings[1]), then dropout (training only).
  """

  output_is_normalized = True  # The encoder appends it without its own LayerNorm.

  def __init__(self,
               hidden_size,
               feature_dim,
               num_patches=contract.NUM_PATCHES,
               type_vocab_size=2,
               dropout_rate=0.1,
               initializer=None,
               **kwargs):
    """Args:
      hidden_size: H, the encoder width (their image embedding has no factorization).
      feature_dim: D, the patch feature size (2048 for their ResNet-50 features).
      num_patches: 64 (8x8 grid).
      type_vocab_size: rows of `patch_type_embeddings` (theirs: 2, their patch_type_vocab_size;
        apart from the text's type table, which search fine-tuning widens to 3 rows).
      dropout_rate: of both dropouts (theirs: hidden_dropout_prob).
      initializer: for the three tables (default: truncated normal, stddev 0.02).
    """
    super().__init__(**kwargs)
    if initializer is None:
      initializer = tf_keras.initializers.TruncatedNormal(stddev=0.02)
    self._initializer = tf_keras.initializers.get(initializer)
    self.hidden_size = int(hidden_size)
    self.feature_dim = int(feature_dim)
    self.num_patches = int(num_patches)
    self.type_vocab_size = int(type_vocab_size)
    self.input_dropout = tf_keras.layers.Dropout(dropout_rate, name="input_dropout")
    self.output_dropout = tf_keras.layers.Dropout(dropout_rate, name="output_dropout")
    self.layer_norm = tf_keras.layers.LayerNormalization(
        axis=-1, epsilon=LAYER_NORM_EPSILON, dtype=tf.float32, name="ImageEmbLayerNorm")

  def build(self, input_shape):
    def table(name, shape):
      return self.add_weight(name, shape=shape, trainable=True,
                             initializer=tf_utils.clone_initializer(self._initializer))
    self.image_projector = table("image_projector", [self.feature_dim, self.hidden_size])
    self.patch_position_embeddings = table("patch_position_embeddings",
                                           [self.num_patches, self.hidden_size])
    self.patch_type_embeddings = table("patch_type_embeddings",
                                       [self.type_vocab_size, self.hidden_size])
    super().build(input_shape)

  def call(self, patch_features, training=None):
    """patch_features float [B, 64, D] -> [B, 64, H] in the layer's compute dtype."""
    features = self.input_dropout(tf.cast(patch_features, self.compute_dtype), training=training)
    projector = tf.cast(self.image_projector, features.dtype)
    projected = tf.einsum("bpd,dh->bph", features, projector)  # [B, 64, H]
    position = tf.cast(self.patch_position_embeddings, projected.dtype)[tf.newaxis]  # [1, 64, H]
    segment = tf.cast(self.patch_type_embeddings[IMAGE_TYPE_ID], projected.dtype)  # [H]
    normalized = self.layer_norm(projected + position + segment)  # float32
    return self.output_dropout(tf.cast(normalized, self.compute_dtype), training=training)


class SeparatelyNormalizedEncoder(encoder_lib.FashionBertEncoder):
  """`FashionBertEncoder` whose appended dense inputs are already normalized (and dropped out).

  BertEncoderV2 runs its embedding LayerNorm and dropout over the whole [text; dense] sequence.
  Here only the text embeddings go through them; the patch embeddings of
  `EasyTransferPatchEmbedding` (own LayerNorm, own dropout) are appended as they are, as in the
  authors' model. Same variables, names and checkpoint paths as `FashionBertEncoder`; the
  attention mask, transformer layers and pooler are BertEncoderV2's.
  """

  def _normalized_embeddings(self, inputs):
    word_ids = inputs["input_word_ids"]
    text = self._get_embeddings(word_ids, inputs["input_type_ids"], None, None, None)
    text = self._embedding_norm_layer(text)
    dense_inputs = inputs.get("dense_inputs")
    return text, dense_inputs

  def input_embeddings(self, inputs):
    """[B, T+N, H]: normalized text embeddings (before dropout) then the dense inputs."""
    text, dense_inputs = self._normalized_embeddings(inputs)
    if dense_inputs is None:
      return text
    return tf.concat([text, tf.cast(dense_inputs, text.dtype)], axis=1)

  def call(self, inputs):
    if not isinstance(inputs, dict):
      raise ValueError(f"Unexpected inputs type to {self.__class__.__name__}.")
    if self._embedding_projection is not None:
      raise ValueError("model.patch_embedding=easytransfer needs embedding width == hidden size")
    text, dense_inputs = self._normalized_embeddings(inputs)
    embeddings = self._embedding_dropout(text)
    mask = inputs["input_mask"]
    if dense_inputs is not None:
      embeddings = tf.concat([embeddings, tf.cast(dense_inputs, embeddings.dtype)], axis=1)
      mask = tf.concat([mask, tf.cast(inputs["dense_mask"], mask.dtype)], axis=1)
    # Keys masked out: text padding (their input_mask) and image padding (their image_mask).
    attention_mask = self._attention_mask_layer(embeddings, mask)
    encoder_outputs = []
    x = embeddings
    for i, layer in enumerate(self._transformer_layers):
      output_range = self._output_range if i == self._num_layers - 1 else None
      x = layer([x, attention_mask], output_range=output_range)
      if self._config["return_attention_scores"]:
        x, _ = x
      encoder_outputs.append(x)
    pooled_output = self._pooler_layer(encoder_outputs[-1][:, 0, :])
    return dict(sequence_output=encoder_outputs[-1], pooled_output=pooled_output,
                encoder_outputs=encoder_outputs)


class LinearMaskedPatchHead(tf_keras.layers.Layer):
  """Their MPM head: (patch sequence [B, 64, H], positions int32 [B, M]) -> logits [B, M, D].

  logits = gather(patch sequence, positions) @ output_weights, output_weights [H, D], no bias.
  """

  def __init__(self, hidden_size, feature_dim, initializer=None, **kwargs):
    super().__init__(**kwargs)
    if initializer is None:
      initializer = tf_keras.initializers.TruncatedNormal(stddev=0.02)
    self._initializer = tf_keras.initializers.get(initializer)
    self.hidden_size = int(hidden_size)
    self.feature_dim = int(feature_dim)

  def build(self, input_shape):
    self.output_weights = self.add_weight(
        "output_weights", shape=[self.hidden_size, self.feature_dim], trainable=True,
        initializer=tf_utils.clone_initializer(self._initializer))
    super().build(input_shape)

  def call(self, patch_sequence, masked_patch_positions):
    gathered = tf.gather(patch_sequence, masked_patch_positions, batch_dims=1)  # [B, M, H]
    return tf.einsum("bmh,hd->bmd", gathered, tf.cast(self.output_weights, gathered.dtype))
