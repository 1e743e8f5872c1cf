"""Model settings: patch backbone, encoder checkpoint and size, heads."""

import dataclasses

from official.modeling.hyperparams import base_config


@dataclasses.dataclass
class ModelConfig(base_config.Config):
  # Patch backbone: "resnext101" (paper), "inception_v3", or "linear" (raw-pixel projection, for
  # tests and the CPU demo).
  backbone: str = "resnext101"
  backbone_weights: str = ""       # local weights file; empty = random init (tests only)
  backbone_trainable: bool = False
  feature_dim: int = 2048          # D: patch feature size (paper: 2048)
  # True: batches carry precomputed `patch_features` [B,64,D] instead of `image`.
  use_precomputed_features: bool = False
  # Encoder checkpoint: format is "hf_safetensors", "tfhub", "model_garden" or "none" (random
  # init from the sizes below, for tests). Empty path with hf_safetensors = the MiniLM default.
  encoder_format: str = "hf_safetensors"
  encoder_checkpoint: str = ""
  # 0 = all layers of the checkpoint; k = the first k (paper's 2/4/6/12-layer variants).
  num_layers: int = 0
  # Sizes used when encoder_format is "none"; otherwise read from the checkpoint.
  vocab_size: int = 30522
  hidden_size: int = 768
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  dropout_rate: float = 0.1
