"""Evaluation settings: TIA accuracy and the Rank@K retrieval protocol (paper 3.1)."""

import dataclasses
from typing import List

from official.modeling.hyperparams import base_config

from fashionbert_tf.configs import data as data_config_lib


TIA_NEGATIVE_SAMPLINGS = data_config_lib.EVALUATION_NEGATIVE_SAMPLING_MODES


@dataclasses.dataclass
class EvalConfig(base_config.Config):
  # Pairs per model call when scoring (each batch padded only to its own longest text).
  batch_size: int = 128
  # Precision of the restored model when scoring from a checkpoint: "float32" (exact) or
  # "bfloat16" (= "mixed_bfloat16"): `modeling/fused_inference.py`, the fused inference graph with
  # matmul weights stored and multiplied in bfloat16 (~2-3x faster on CPUs with AMX / AVX-512
  # BF16); LayerNorm, the attention softmax, the pooler and the TIA classifier stay float32, so
  # P(match) is not rounded to bfloat16.
  # A SavedModel (--saved_model) is scored in the precision it was exported with.
  mixed_precision: str = "float32"
  # Compile the scoring function with XLA (checkpoint scoring; an export carries its own setting).
  # Measured slower than without on 2-core Xeon CPUs (docs/benchmarks/README.md); kept for other machines.
  jit_compile: bool = False
  # Text lengths padded up to multiples of this many positions before scoring (XLA compiles one
  # shape per bucket): -1 = 16 under jit_compile, exact VSL otherwise; 0 = never.
  length_bucket: int = -1
  rank_ks: List[int] = dataclasses.field(default_factory=lambda: [1, 5, 10])
  # 0 = every test pair for TIA accuracy; n = at most n pairs per direction (the first n // 2
  # records by record_id, each with one positive and one negative; toy demo time budget).
  max_tia_pairs: int = 0
  # 0 = every saved retrieval query; n = the first n queries of each direction (time budget: each
  # query costs num_candidates + 1 full encoder passes).
  max_retrieval_queries: int = 0
  # Images whose patch features are computed (and held in memory) at once while scoring.
  images_per_step: int = 64
  # Where the TIA accuracy's negative texts come from: "same_subcategory" (another product of the
  # same (category, subcategory): the fine-grained test, like the retrieval candidates), "random"
  # (any other product), "mixed", or "" = data.negative_sampling, as in training ("random" when
  # training draws look-alikes). A run trained on the paper's random negatives is still scored on
  # the harder ones when this says so.
  tia_negative_sampling: str = ""
  # Seed of the fixed TIA negatives (the retrieval candidates have their own, data.seed).
  seed: int = 2020
  # Where results.json and the TensorBoard text go; empty = <train.model_dir>/eval.
  output_dir: str = ""
  # Seconds between progress lines (pairs done, pairs/s).
  progress_interval_s: float = 10.0

  def validate(self):
    super().validate()
    if self.tia_negative_sampling and self.tia_negative_sampling not in TIA_NEGATIVE_SAMPLINGS:
      raise ValueError(f"eval.tia_negative_sampling = {self.tia_negative_sampling!r}; expected "
                       f"one of {TIA_NEGATIVE_SAMPLINGS} or '' (= data.negative_sampling)")
