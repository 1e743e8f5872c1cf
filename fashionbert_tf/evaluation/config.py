"""Evaluation settings: TIA accuracy and the Rank@K retrieval protocol (paper 3.1)."""

import dataclasses
from typing import List

from official.modeling.hyperparams import base_config


@dataclasses.dataclass
class EvalConfig(base_config.Config):
  # Pairs per model call when scoring (each batch padded only to its own longest text).
  batch_size: int = 128
  # Keras dtype policy of the restored model when scoring from a checkpoint: "float32" (exact) or
  # "mixed_bfloat16" (matmuls in bfloat16, ~2x faster on CPUs with AMX / AVX-512 BF16; LayerNorm,
  # softmax and the TIA classifier stay float32, so P(match) is not rounded to bfloat16).
  mixed_precision: str = "float32"
  rank_ks: List[int] = dataclasses.field(default_factory=lambda: [1, 5, 10])
  # 0 = every test pair for TIA accuracy; n = at most n pairs per direction (the first n // 2
  # records by record_id, each with one positive and one negative; toy demo time budget).
  max_tia_pairs: int = 0
  # 0 = every saved retrieval query; n = the first n queries of each direction (time budget: each
  # query costs num_candidates + 1 full encoder passes).
  max_retrieval_queries: int = 0
  # Images whose patch features are computed (and held in memory) at once while scoring.
  images_per_step: int = 64
  # Seed of the fixed TIA negatives (the retrieval candidates have their own, data.seed).
  seed: int = 2020
  # Where results.json and the TensorBoard text go; empty = <train.model_dir>/eval.
  output_dir: str = ""
  # Seconds between progress lines (pairs done, pairs/s).
  progress_interval_s: float = 10.0
