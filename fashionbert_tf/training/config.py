"""Training settings: optimizer and schedule (paper 3.1), loss weighting, distribution."""

import dataclasses

from official.modeling.hyperparams import base_config


@dataclasses.dataclass
class TrainConfig(base_config.Config):
  model_dir: str = "runs/default"
  global_batch_size: int = 64        # paper 3.1: 64 pairs per batch
  train_steps: int = 100000
  steps_per_epoch: int = 0           # 0 = one pass over the training TFRecords
  # Paper 3.1: Adam, lr 2e-5, beta1 0.95, beta2 0.999, weight decay 1e-4, 5,000 warm-up steps
  # then linear decay.
  learning_rate: float = 2e-5
  beta_1: float = 0.95
  beta_2: float = 0.999
  weight_decay: float = 1e-4
  warmup_steps: int = 5000
  # "grad_norm" (paper Eq. 6), "loss_softmax" (authors' public code), "fixed" (w_i = 1/3).
  loss_weighting: str = "grad_norm"
  strategy: str = "one_device"       # one_device | mirrored | multi_worker
  mixed_precision: bool = False
  jit_compile: bool = False
  checkpoint_every_steps: int = 1000
  validation_every_steps: int = 1000
  validation_steps: int = 50
  early_stopping_patience: int = 3   # validations without improvement before stopping
