"""Evaluation settings: TIA accuracy and the Rank@K retrieval protocol (paper 3.1)."""

import dataclasses
from typing import List

from official.modeling.hyperparams import base_config


@dataclasses.dataclass
class EvalConfig(base_config.Config):
  batch_size: int = 128
  rank_ks: List[int] = dataclasses.field(default_factory=lambda: [1, 5, 10])
  # 0 = every test pair for TIA accuracy; n = the first n (toy demo time budget).
  max_tia_pairs: int = 0
