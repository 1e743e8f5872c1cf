"""FashionBERT (paper section 2.2, Figure 2): text + image patches -> BERT -> MLM, MPM, TIA heads.

Input: a dict per the batch contract (`fashionbert_tf/data/contract.py`) with either `image`
(uint8 [B, 256, 256, 3]; the patch feature extractor runs) or `patch_features` (float32
[B, 64, D], precomputed; the extractor is skipped). The `masked_*` keys and `tia_label` are optional.

The sequence seen by the encoder is `[CLS] text [SEP] p_1 ... p_64`: the T text positions first
(padded only to the batch's longest text; padding is masked out of attention), then the 64 patches,
which are always attended to. Sequence positions T .. T+63 hold patches 0..63.

Output dict (all float32, also under a mixed-precision policy):
  sequence_output [B, T+64, H]  the encoder's last layer.
  pooled_output   [B, H]        tanh(dense([CLS] output)).
  tia_logits      [B, 2]        class 1 = match; P(match) = softmax(tia_logits)[:, 1].
  mlm_logits      [B, P, V]     only when `masked_lm_positions` is given.
  mpm_logits      [B, M, D]     only when `masked_patch_positions` is given: predicted distribution
                                logits over the D feature dims of each masked patch.
  mpm_targets     [B, M, D]     with mpm_logits: the original (unmasked) features of those patches,
                                stop-gradient.
Patch features are first conditioned by `patch_feature_normalization` (per-dimension
standardization with the training images' statistics, `model.patch_feature_normalization`; see
`patch_feature_normalization.py`), then masked patches (`masked_patch_positions` with weight > 0)
have their features zeroed before the patch embedding (paper 2.2, MPM); `mpm_targets` are the
conditioned features.
"""

import tensorflow as tf
import tf_keras

from fashionbert_tf.data import contract
from fashionbert_tf.modeling import patch_embedding as patch_embedding_lib


def _as_float32(tensor):
  return tf.cast(tensor, tf.float32)


class FashionBertModel(tf_keras.Model):
  """The FashionBERT network; build it with `model_builder.build_fashionbert(model_config)`."""

  def __init__(self,
               encoder,
               patch_feature_extractor,
               patch_embedding,
               mlm_head,
               mpm_head,
               tia_head,
               patch_feature_normalization=None,
               **kwargs):
    """Args:
      encoder: `encoder.FashionBertEncoder`.
      patch_feature_extractor: layer uint8 [B, 256, 256, 3] -> float32 [B, 64, D].
      patch_embedding: `patch_embedding.PatchEmbedding` (shares the encoder's type embeddings).
      mlm_head: Model Garden `MaskedLM` tied to the encoder's word embeddings.
      mpm_head: `heads.MaskedPatchHead`.
      tia_head: `heads.TextImageAlignmentHead`.
      patch_feature_normalization: optional layer float [B, 64, D] -> float32 [B, 64, D] applied
        to the patch features first (`patch_feature_normalization.PatchFeatureStandardization`);
        None = raw features.
    """
    super().__init__(**kwargs)
    self.encoder = encoder
    self.patch_feature_extractor = patch_feature_extractor
    self.patch_embedding = patch_embedding
    self.mlm_head = mlm_head
    self.mpm_head = mpm_head
    self.tia_head = tia_head
    self.patch_feature_normalization = patch_feature_normalization

  def compute_patch_features(self, image):
    """The backbone step alone: uint8 [B, 256, 256, 3] -> float32 [B, 64, D] (inference mode)."""
    return _as_float32(self.patch_feature_extractor(image, training=False))

  @property
  def shared_variables(self):
    """Trainable variables every task's loss reaches: the basis of the grad-norm adaptive loss.

    The encoder's embeddings (word, text position, type), embedding LayerNorm and transformer
    layers, and the patch embedding (projection, patch position table). Not the heads, and not the
    pooler (only TIA uses it). The patch backbone is left out even when trainable: its features
    feed all tasks too, but the paper's grad norm is over the matching backbone (BERT) and a
    ResNeXt-101 would multiply the cost of the per-task gradients.
    """
    pooler_ids = {id(v) for v in self.encoder.pooler_layer.trainable_variables}
    variables, seen = [], set()
    for variable in self.encoder.trainable_variables + self.patch_embedding.trainable_variables:
      if id(variable) in seen or id(variable) in pooler_ids:
        continue
      seen.add(id(variable))
      variables.append(variable)
    return variables

  @property
  def new_layer_variables(self):
    """Trainable variables of the layers that start untrained for FashionBERT's tasks.

    The patch embedding (projection, patch position table), the MPM and TIA heads, and the pooler:
    only TIA reads it, and a checkpoint's pooler was trained for next-sentence prediction at best
    (the MiniLM default's was not: its weights have std 0.009 and zero bias). Not the MLM head
    (BERT's own pre-training head, loaded when the checkpoint has one) and not the patch backbone
    (a pre-trained CNN). `train.new_layers_learning_rate_multiplier` applies to them.
    """
    return (self.patch_embedding.trainable_variables + self.mpm_head.trainable_variables +
            self.tia_head.trainable_variables + self.encoder.pooler_layer.trainable_variables)

  def call(self, inputs, training=None):
    return self.apply_heads(inputs, self.encode(inputs, training=training))

  def encode(self, inputs, training=None):
    """Patch features -> patch embedding -> encoder: the part all three tasks share.

    Returns a dict: `sequence_output` float32 [B, T+64, H] (the encoder's last layer),
    `patch_features` float32 [B, 64, D] (after `patch_feature_normalization`, before masking: the
    MPM targets come from them) and `text_length` (T, scalar int32).
    """
    if contract.FEATURES_KEY in inputs:
      patch_features = _as_float32(inputs[contract.FEATURES_KEY])  # Precomputed: no backbone.
    elif contract.IMAGE_KEY in inputs:
      patch_features = _as_float32(
          self.patch_feature_extractor(inputs[contract.IMAGE_KEY], training=training))
    else:
      raise ValueError(
          f"FashionBERT inputs need `{contract.IMAGE_KEY}` or `{contract.FEATURES_KEY}`; got keys "
          f"{sorted(inputs)}")
    if self.patch_feature_normalization is not None:
      patch_features = self.patch_feature_normalization(patch_features)  # [B, 64, D] float32

    visible_features = patch_features
    if "masked_patch_positions" in inputs:
      masked_patch_weights = inputs.get("masked_patch_weights")
      if masked_patch_weights is None:
        raise ValueError("FashionBERT inputs: `masked_patch_positions` needs `masked_patch_weights`")
      visible_features = patch_embedding_lib.zero_masked_patches(
          patch_features, inputs["masked_patch_positions"], masked_patch_weights)

    patch_embeddings = self.patch_embedding(visible_features, training=training)  # [B, 64, E]
    input_word_ids = inputs["input_word_ids"]
    batch_size = tf.shape(input_word_ids)[0]
    encoder_outputs = self.encoder(
        dict(input_word_ids=input_word_ids,
             input_mask=inputs["input_mask"],
             input_type_ids=inputs["input_type_ids"],
             dense_inputs=patch_embeddings,
             dense_mask=tf.ones([batch_size, contract.NUM_PATCHES], tf.int32)),
        training=training)
    return dict(sequence_output=_as_float32(encoder_outputs["sequence_output"]),
                patch_features=patch_features,
                text_length=tf.shape(input_word_ids)[1])

  def apply_heads(self, inputs, encoded, sequence_output=None):
    """The pooler and the three heads on the encoder output: the output dict (module docstring).

    Args:
      inputs: the batch dict (the masked_* keys select what MLM and MPM predict).
      encoded: what `encode` returned for `inputs`.
      sequence_output: optional float32 [B, T+64, H] to read instead of
        `encoded["sequence_output"]` (same values): the training step passes a stop-gradient copy
        it watches, so that each task's gradient w.r.t. the encoder output can be taken through
        the heads alone (`train.task_gradient_normalization`).

    Every head reads this one float32 tensor (the pooler included: pooled = tanh(dense([CLS]))
    over it, as BERT's pooler does over the encoder's last layer), so a gradient w.r.t. the
    returned `sequence_output` reaches every head. Under a mixed policy Keras casts it back to the
    compute dtype inside each head. The heads have no dropout, so there is no `training` flag.
    """
    if sequence_output is None:
      sequence_output = encoded["sequence_output"]  # [B, T+64, H]
    pooled_output = _as_float32(self.encoder.pooler_layer(sequence_output[:, 0, :]))  # [B, H]
    outputs = dict(
        sequence_output=sequence_output,
        pooled_output=pooled_output,
        tia_logits=_as_float32(self.tia_head(pooled_output)))
    if "masked_lm_positions" in inputs:
      # Text comes first, so text positions are sequence positions.
      outputs["mlm_logits"] = _as_float32(
          self.mlm_head(sequence_output, inputs["masked_lm_positions"]))
    if "masked_patch_positions" in inputs:
      masked_patch_positions = inputs["masked_patch_positions"]
      patch_sequence = sequence_output[:, encoded["text_length"]:, :]  # [B, 64, H]
      outputs["mpm_logits"] = _as_float32(self.mpm_head(patch_sequence, masked_patch_positions))
      outputs["mpm_targets"] = tf.stop_gradient(
          tf.gather(encoded["patch_features"], masked_patch_positions, batch_dims=1))
    return outputs
