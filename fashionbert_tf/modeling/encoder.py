"""The FashionBERT encoder: Model Garden's BERT encoder over `[CLS] text [SEP] p_1 ... p_64`.

Paper section 2.2 ("Matching Backbone"): the concatenation of the text token sequence and the image
patch sequence is the input of a pre-trained standard BERT; text and patches interact freely in its
self-attention layers.

`FashionBertEncoder` is `official.nlp.modeling.networks.BertEncoderV2` with one change: appended
dense inputs (the patch embeddings) get no text position embedding. BertEncoderV2's own
`dense_inputs` path adds the text position embeddings T .. T+63 and a type embedding to them, so a
patch's embedding would depend on the text length T. Here the patch embeddings arrive complete
(projected feature + the patch's own spatial position embedding + the image segment embedding, see
`patch_embedding.py`) and are appended as they are.

Why a subclass rather than `EncoderScaffold` with a custom embedding network: the subclass keeps
every variable, layer name and checkpoint path of BertEncoderV2 (`word_embeddings/embeddings`,
`transformer/layer_0/self_attention/query/kernel`, ...; checkpoint paths `_embedding_layer`,
`_transformer_layers/0/...`), so TF-Hub BERT SavedModels and Model Garden checkpoints map onto it
one to one, and its `call` (mask concatenation, embedding LayerNorm + dropout, transformer layers,
pooler) is reused unchanged. Only `_get_embeddings` is overridden.

LayerNorm / dropout: as in BERT, where LayerNorm and dropout follow the sum word + position + type,
the concatenated [text; patch] embeddings go through the encoder's embedding LayerNorm and dropout
together. Both act per position, so a patch's normalized embedding still never depends on the text.
"""

import tensorflow as tf
import tf_keras

from official.modeling import activations as mg_activations
from official.nlp.modeling import networks

# Names accepted by `model.encoder_activation` (and Hugging Face `hidden_act` values).
_ACTIVATIONS = {
    # Exact GELU (erf): Hugging Face BERT's "gelu".
    "gelu": tf_keras.activations.gelu,
    # tanh-approximated GELU: original BERT, Model Garden's "gelu", TF-Hub BERT.
    "gelu_approximate": mg_activations.gelu,
    "gelu_new": mg_activations.gelu,
    "gelu_pytorch_tanh": mg_activations.gelu,
    "relu": tf_keras.activations.relu,
}


def activation_name(function):
  """The first name registered for the activation `function` (e.g. "gelu_approximate" for Model
  Garden's gelu), or None."""
  return next((name for name, known in _ACTIVATIONS.items() if known is function), None)


def get_activation(name):
  """The activation function called `name` (see `model.encoder_activation`).

  Raises:
    ValueError: unknown name.
  """
  if name not in _ACTIVATIONS:
    raise ValueError(
        f"model.encoder_activation: unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}")
  return _ACTIVATIONS[name]


class FashionBertEncoder(networks.BertEncoderV2):
  """BertEncoderV2 whose appended dense inputs are complete embeddings (no text position added).

  Called like BertEncoderV2 with a dict:
    input_word_ids  int32 [B, T]
    input_mask      int32 [B, T]
    input_type_ids  int32 [B, T]
    dense_inputs    [B, N, E] (optional): complete patch embeddings (E = embedding width)
    dense_mask      int32 [B, N] (with dense_inputs): 1 = attend (patches: all ones)
  Returns BertEncoderV2's dict: `sequence_output` [B, T+N, H], `pooled_output` [B, H] (tanh dense
  over position 0, [CLS]), `encoder_outputs` (one [B, T+N, H] per layer).

  Text embeddings are word + position (0..T-1) + type, exactly BertEncoderV2's; without
  `dense_inputs` the encoder is BertEncoderV2.
  """

  @property
  def type_embedding_layer(self):
    """The segment (token type) embedding layer; the patch embedding uses its row 1 ("I")."""
    return self._type_embedding_layer

  @property
  def embedding_width(self):
    """E: width of the word embeddings (== hidden size unless factorized)."""
    return self._config["embedding_width"]

  @property
  def hidden_size(self):
    return self._config["hidden_size"]

  @property
  def num_layers(self):
    return self._config["num_layers"]

  def input_embeddings(self, inputs):
    """The encoder's input sequence [B, T+N, E] after the embedding LayerNorm (before dropout).

    Same dict as `call`; for inspection and tests (e.g. a patch's embedding vs the text length).
    """
    embeddings = self._get_embeddings(inputs["input_word_ids"], inputs["input_type_ids"], None,
                                      inputs.get("dense_inputs"), None)
    return self._embedding_norm_layer(embeddings)

  def _get_embeddings(self, word_ids, type_ids, word_embeddings, dense_inputs, dense_type_ids):
    del dense_type_ids  # The patch embeddings already carry their segment embedding.
    if word_embeddings is None:
      word_embeddings = self._embedding_layer(word_ids)
    # Paper 2.2, text representation: word-piece + position + segment embedding.
    text_embeddings = (word_embeddings + self._position_embedding_layer(word_embeddings) +
                       self._type_embedding_layer(type_ids))
    if dense_inputs is None:
      return text_embeddings
    # Paper 2.2, matching backbone: the patch sequence follows the text sequence.
    return tf.concat([text_embeddings, tf.cast(dense_inputs, text_embeddings.dtype)], axis=1)
