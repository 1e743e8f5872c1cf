"""The shape of a BERT encoder, read from a checkpoint or from the config (encoder_format none)."""

import dataclasses


@dataclasses.dataclass
class EncoderSizes:
  """The shape of a BERT encoder (read from a checkpoint, or from the config for `none`)."""
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int
  embedding_width: int
  activation: str


def sizes_from_config(model_config):
  """`EncoderSizes` of a randomly initialized encoder (`model.encoder_format: none`)."""
  if model_config.num_layers <= 0:
    raise ValueError("model.num_layers must be > 0 when model.encoder_format is 'none' (there is "
                     "no checkpoint to take the layer count from)")
  return EncoderSizes(
      vocab_size=model_config.vocab_size,
      hidden_size=model_config.hidden_size,
      num_layers=model_config.num_layers,
      num_attention_heads=model_config.num_attention_heads,
      intermediate_size=model_config.intermediate_size,
      max_position_embeddings=model_config.max_position_embeddings,
      type_vocab_size=model_config.type_vocab_size,
      embedding_width=model_config.hidden_size,
      activation=model_config.encoder_activation or "gelu_approximate")
