"""The one table every checkpoint reader produces: canonical BERT names -> arrays, and its sizes.

Canonical names are Model Garden's BERT variable names without the model prefix, e.g.
`word_embeddings/embeddings`, `transformer/layer_0/self_attention/query/kernel` ([H, heads, H/heads]),
`pooler_transform/kernel`, `cls/predictions/transform/dense/kernel` (MLM head); `nsp/kernel`,
`nsp/bias` (next-sentence head, Hugging Face only).
"""

import dataclasses
import re

from fashionbert_tf.modeling import encoder_sizes

_CANONICAL_PATTERN = re.compile(
    r"(?:^|/)("
    r"word_embeddings/embeddings|position_embedding/embeddings|type_embeddings/embeddings|"
    r"embeddings/layer_norm/(?:gamma|beta)|embedding_projection/(?:kernel|bias)|"
    r"transformer/layer_\d+/[^:]+|pooler_transform/(?:kernel|bias)|cls/predictions/[^:]+"
    r")(?::\d+)?$")
_LAYER_PATTERN = re.compile(r"^transformer/layer_(\d+)/")

MLM_HEAD_NAMES = (
    "cls/predictions/transform/dense/kernel",
    "cls/predictions/transform/dense/bias",
    "cls/predictions/transform/LayerNorm/gamma",
    "cls/predictions/transform/LayerNorm/beta",
    "cls/predictions/output_bias/bias",
)
NSP_HEAD_NAMES = ("nsp/kernel", "nsp/bias")

# Model Garden / TF-Hub BERT use the tanh-approximated GELU ("gelu" in Model Garden's configs).
_DEFAULT_TF_ACTIVATION = "gelu_approximate"


class CheckpointMismatchError(ValueError):
  """A pre-trained checkpoint lacks a variable the model needs, or has it in another shape."""


@dataclasses.dataclass
class PretrainedBert:
  """Weights read from a checkpoint, by canonical name, plus the encoder sizes they imply.

  Attributes:
    sizes: `encoder_sizes.EncoderSizes` of the checkpoint (all its layers).
    weights: canonical name -> float32 np.ndarray.
    origins: canonical name -> the name in the source (for error messages).
    source: a description of the source ("hf_safetensors /path/model.safetensors").
    missing: canonical name -> source name of variables the source lacks (reported on use).
    reference_saved_model: for tfhub, the SavedModel directory (to verify the loaded encoder).
  """
  sizes: object
  weights: dict
  origins: dict
  source: str
  missing: dict = dataclasses.field(default_factory=dict)
  reference_saved_model: str = ""


def canonical_name(variable_name):
  """Canonical BERT name of a variable name (`bert_encoder/transformer/layer_0/.../kernel:0` ->
  `transformer/layer_0/.../kernel`), or None when it is not a BERT encoder / MLM head variable."""
  match = _CANONICAL_PATTERN.search(variable_name)
  return match.group(1) if match else None


def sizes_from_weights(weights, activation, source):
  """Reads `EncoderSizes` from the shapes of a canonical weight table (TF-Hub, Model Garden).

  The number of attention heads comes from the query kernel's [H, heads, H/heads] shape.
  """
  def shape_of(name):
    if name not in weights:
      raise CheckpointMismatchError(f"{source}: no variable {name!r}: not a BERT encoder checkpoint")
    return weights[name].shape

  vocab_size, embedding_width = shape_of("word_embeddings/embeddings")
  layers = sorted({int(m.group(1)) for m in map(_LAYER_PATTERN.match, weights) if m})
  if not layers:
    raise CheckpointMismatchError(f"{source}: no transformer layers (transformer/layer_N/...)")
  if layers != list(range(len(layers))):
    raise CheckpointMismatchError(f"{source}: transformer layers are not numbered 0..N-1: {layers}")
  hidden_size, num_heads, _ = shape_of("transformer/layer_0/self_attention/query/kernel")
  return encoder_sizes.EncoderSizes(
      vocab_size=int(vocab_size),
      hidden_size=int(hidden_size),
      num_layers=len(layers),
      num_attention_heads=int(num_heads),
      intermediate_size=int(shape_of("transformer/layer_0/intermediate/kernel")[1]),
      max_position_embeddings=int(shape_of("position_embedding/embeddings")[0]),
      type_vocab_size=int(shape_of("type_embeddings/embeddings")[0]),
      embedding_width=int(embedding_width),
      activation=activation or _DEFAULT_TF_ACTIVATION)
