"""The three FashionBERT heads (paper section 2.2): MLM, MPM and TIA.

- MLM (Eq. 1): Model Garden's `MaskedLM`: dense + activation + LayerNorm, then logits over the BERT
  vocabulary with the output matrix tied to the word embeddings (+ an output bias), as in BERT.
  Layer name `cls/predictions`, so its variables are named like BERT's pre-training head and a
  checkpoint's MLM head (HF `cls.predictions.*`, Model Garden `cls/predictions/*`) can initialize it.
- MPM (Eq. 2): `MaskedPatchHead`. The paper predicts "the distribution over the masked-out patch
  features" and trains it with a KL divergence to the distribution of the original features; it
  does not say how. Our choice, mirroring the MLM head: gather the encoder outputs of the masked
  patches, dense (H -> H) + activation + LayerNorm, then a dense layer to D logits; the loss (owned by
  training) compares softmax(logits) with softmax(original feature) over the D dimensions.
- TIA (Eq. 3): `TextImageAlignmentHead`, a dense layer to 2 logits on the pooled [CLS] output
  (class 1 = match), i.e. BERT's next-sentence classifier; it can start from a checkpoint's NSP head
  (HF `cls.seq_relationship`), since NSP and TIA are both "do these two segments belong together".
"""

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils
from official.nlp.modeling import layers


class InputTrainedMaskedLM(layers.MaskedLM):
  """Model Garden's `MaskedLM` whose tied output matrix passes no gradient to the word embeddings
  (`model.mlm_output_trains_word_embeddings: false`): same variables, names and logits."""

  def call(self, sequence_data, masked_positions):
    """[B, S, H], int32 [B, P] -> logits [B, P, V]."""
    hidden = self.layer_norm(self.dense(self._gather_indexes(sequence_data, masked_positions)))
    logits = tf.nn.bias_add(
        tf.matmul(hidden, tf.stop_gradient(self.embedding_table), transpose_b=True), self.bias)
    return tf.reshape(logits, [tf.shape(masked_positions)[0], tf.shape(masked_positions)[1],
                               self._vocab_size])


def build_masked_lm_head(embedding_table, activation, initializer, output_trains_embeddings=True):
  """MLM head: (sequence [B, S, H], positions int32 [B, P]) -> logits [B, P, V], tied weights
  (`output_trains_embeddings=False`: the output side under stop_gradient)."""
  head_class = layers.MaskedLM if output_trains_embeddings else InputTrainedMaskedLM
  return head_class(
      embedding_table=embedding_table,
      activation=activation,
      initializer=tf_utils.clone_initializer(initializer),
      output="logits",
      name="cls/predictions")


class MaskedPatchHead(tf_keras.layers.Layer):
  """MPM head: (patch sequence [B, 64, H], positions int32 [B, M]) -> logits [B, M, D].

  Logits of the predicted distribution over the D feature dimensions of each masked patch:
  gather -> Dense(H, activation) -> LayerNorm -> Dense(D).
  """

  def __init__(self, hidden_size, feature_dim, activation, initializer, **kwargs):
    super().__init__(**kwargs)
    self.feature_dim = int(feature_dim)
    self.transform = tf_keras.layers.Dense(
        hidden_size,
        activation=activation,
        kernel_initializer=tf_utils.clone_initializer(initializer),
        name="transform/dense")
    self.layer_norm = tf_keras.layers.LayerNormalization(
        axis=-1, epsilon=1e-12, name="transform/LayerNorm")
    self.output_dense = tf_keras.layers.Dense(
        self.feature_dim,
        kernel_initializer=tf_utils.clone_initializer(initializer),
        name="output")

  def call(self, patch_sequence, masked_patch_positions):
    gathered = tf.gather(patch_sequence, masked_patch_positions, batch_dims=1)  # [B, M, H]
    return self.output_dense(self.layer_norm(self.transform(gathered)))


class TextImageAlignmentHead(tf_keras.layers.Layer):
  """TIA head: pooled [CLS] output [B, H] -> logits [B, 2]; P(match) = softmax(logits)[:, 1]."""

  def __init__(self, initializer, **kwargs):
    super().__init__(**kwargs)
    # float32 whatever the policy: under a mixed policy the logits (and so P(match), which ranks
    # 101 candidates per query) are not rounded to 16 bits, where near scores would tie.
    self.classifier = tf_keras.layers.Dense(
        2, kernel_initializer=tf_utils.clone_initializer(initializer), dtype="float32",
        name="classifier")

  def call(self, pooled_output):
    return self.classifier(pooled_output)
