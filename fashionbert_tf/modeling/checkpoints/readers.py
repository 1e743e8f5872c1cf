"""One entry for every pre-trained BERT format: `read_pretrained_bert(format, path)`."""

from fashionbert_tf.modeling.checkpoints import hf_safetensors
from fashionbert_tf.modeling.checkpoints import model_garden
from fashionbert_tf.modeling.checkpoints import tfhub

READERS = {
    "hf_safetensors": hf_safetensors.read_hf_safetensors,
    "tfhub": tfhub.read_tfhub_saved_model,
    "model_garden": model_garden.read_model_garden_checkpoint,
}


def read_pretrained_bert(encoder_format, path, activation=""):
  """Reads a pre-trained BERT of `encoder_format` ("hf_safetensors", "tfhub", "model_garden")."""
  if encoder_format not in READERS:
    raise ValueError(f"model.encoder_format: no reader for {encoder_format!r}; expected one of "
                     f"{', '.join(READERS)}")
  return READERS[encoder_format](path, activation=activation)
