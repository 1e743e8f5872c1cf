"""Training settings: optimizer and schedule (paper 3.1), loss weighting, distribution."""

import dataclasses
from typing import List

from official.modeling.hyperparams import base_config

# The pretraining tasks, in the order of every per-task [3] vector (losses, weights, g).
TASKS = ("mlm", "mpm", "tia")
LOSS_WEIGHTINGS = ("grad_norm", "loss_softmax", "fixed")
GRAD_NORM_SCOPES = ("shared_variables", "sequence_output")
GRAD_NORM_NORMALIZATIONS = ("sum", "max")
MASKED_LOSS_PAIRS = ("positive", "all")
TASK_GRADIENT_NORMALIZATIONS = ("none", "sequence_output")
STRATEGIES = ("one_device", "mirrored", "multi_worker")
NONFINITE_ACTIONS = ("stop", "skip_batch")
RESUME_INPUTS = ("skip", "restart")
MIXED_PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")


@dataclasses.dataclass
class TrainConfig(base_config.Config):
  """What `fashionbert pretrain` reads. Defaults are the paper's (section 3.1) where it gives one."""
  model_dir: str = "runs/default"
  # A warm start (Model Garden's `init_checkpoint`): a FashionBERT checkpoint (runs/x/ckpt-N, or a
  # run folder: its latest) whose model weights a fresh run starts from, the patch-feature
  # statistics and MLM head included; the optimizer, the step and the learning-rate schedule start
  # afresh. Ignored when model_dir holds a checkpoint to resume (training/warm_start.py).
  init_checkpoint: str = ""
  global_batch_size: int = 64        # paper 3.1: 64 pairs per batch
  train_steps: int = 100000
  steps_per_epoch: int = 0           # 0 = one pass over the training TFRecords (informational)
  # Paper 3.1: Adam, lr 2e-5, beta1 0.95, beta2 0.999, weight decay 1e-4, 5,000 warm-up steps
  # then linear decay (to 0 at `train_steps`).
  learning_rate: float = 2e-5
  beta_1: float = 0.95
  beta_2: float = 0.999
  epsilon: float = 1e-6
  weight_decay: float = 1e-4
  warmup_steps: int = 5000
  # Learning rate of the layers that start untrained for FashionBERT's tasks (patch embedding, MPM
  # and TIA heads, and the pooler only TIA reads; `FashionBertModel.new_layer_variables`) as a
  # multiple of `learning_rate`; 1 = one rate for all, as in the paper. See training/optimizer.py.
  new_layers_learning_rate_multiplier: float = 1.0
  # Clip the (all-reduced, weighted) gradient to this global norm; 0 = no clipping. The paper does
  # not mention clipping; 1.0 is what BERT pre-training (and Model Garden's AdamWeightDecay) use.
  gradient_clip_norm: float = 1.0
  # "grad_norm" (paper Eq. 6), "loss_softmax" (authors' public code), "fixed" (w_i = 1/3).
  loss_weighting: str = "grad_norm"
  # With loss_weighting "fixed": the weights of (MLM, MPM, TIA); empty = 1/3 each (the paper's
  # ablation). E.g. [0, 0, 1] trains text-image alignment alone (a diagnostic, not FashionBERT).
  fixed_loss_weights: List[float] = dataclasses.field(default_factory=list)
  # Where grad_norm measures each task's gradient: "shared_variables" (the paper: the encoder's
  # parameters shared by all three tasks, `model.shared_variables`) or "sequence_output" (cheaper:
  # the gradient w.r.t. the encoder's last-layer output, the representation all heads share).
  grad_norm_scope: str = "shared_variables"
  # How squared gradient norms s_i become g_i in [0, 1] (the paper does not say):
  # "sum": g_i = s_i / sum_j s_j;  "max": g_i = s_i / max_j s_j.
  grad_norm_normalization: str = "sum"
  # How the three tasks' gradients are combined in the shared encoder (see training/pretrainer.py):
  #   "none": the gradient of sum_i w_i l_i (Eq. 4 and Algorithm 1 read literally);
  #   "sequence_output": each task's gradient w.r.t. the encoder output is first scaled to the
  #     same norm, then the Eq. 6 weights combine them and one backward pass carries the sum into
  #     the encoder (the heads keep their own task's plain gradient). Not in the paper, which
  #     needs "normalized" gradients for Eq. 6 but does not say where. Measured on the toy demo:
  #     with "none" the MLM gradient (its head starts untrained) is 10^3-10^4 x TIA's in squared
  #     norm, Adam's per-weight step follows MLM, and TIA stays at chance (docs/experiments/what_held_learning_back.md).
  task_gradient_normalization: str = "none"
  # Which pairs MLM and MPM are computed on: "positive" (matched pairs only; predicting a masked
  # word from a mismatched image is noise) or "all". TIA always uses all pairs.
  masked_losses_on: str = "positive"
  strategy: str = "one_device"       # one_device | mirrored | multi_worker (TF_CONFIG)
  # Devices for `mirrored`; empty = all GPUs, or all (logical) CPUs when there is no GPU.
  mirrored_devices: List[str] = dataclasses.field(default_factory=list)
  # "float32", "mixed_float16" (dynamic loss scaling), "mixed_bfloat16", or "auto": mixed_bfloat16
  # where the hardware multiplies bfloat16 natively (AMX / AVX-512 BF16 CPUs, GPUs of compute
  # capability >= 8.0), float32 elsewhere (training/native_bfloat16.py).
  mixed_precision: str = "float32"
  jit_compile: bool = False          # XLA-compile the train step
  checkpoint_every_steps: int = 1000
  max_checkpoints_to_keep: int = 3
  validation_every_steps: int = 1000
  validation_steps: int = 50         # 0 = no validation (and no early stopping)
  early_stopping_patience: int = 3   # validations without improvement before stopping; 0 = off
  early_stopping_min_delta: float = 0.0
  log_every_steps: int = 10          # TensorBoard scalars + absl log line
  # A step whose loss (any of the three) or all-reduced gradient is NaN / Inf never updates the
  # weights (every replica sees the same global values, so all agree). Then "stop": the run ends
  # with an error naming the step and the loss, and writes no checkpoint; "skip_batch": the batch
  # is skipped (the step count and schedule move on) and counted (`skipped_batches` in the logs,
  # TensorBoard and the checkpoint).
  on_nonfinite: str = "stop"
  # Where a resumed run's input starts: "skip" the batches the checkpointed steps consumed (the
  # deterministic pipeline then yields exactly what an unbroken run would have) or "restart".
  resume_input: str = "skip"
  seed: int = 42

  def validate(self):
    super().validate()
    choices = {
        "loss_weighting": LOSS_WEIGHTINGS,
        "grad_norm_scope": GRAD_NORM_SCOPES,
        "grad_norm_normalization": GRAD_NORM_NORMALIZATIONS,
        "masked_losses_on": MASKED_LOSS_PAIRS,
        "task_gradient_normalization": TASK_GRADIENT_NORMALIZATIONS,
        "strategy": STRATEGIES,
        "mixed_precision": MIXED_PRECISIONS,
        "on_nonfinite": NONFINITE_ACTIONS,
        "resume_input": RESUME_INPUTS,
    }
    for name, allowed in choices.items():
      value = getattr(self, name)
      if value not in allowed:
        raise ValueError(f"train.{name} = {value!r}; expected one of {allowed}")
    if (self.task_gradient_normalization == "sequence_output" and
        self.loss_weighting == "grad_norm" and self.grad_norm_scope != "sequence_output"):
      raise ValueError("train.task_gradient_normalization = 'sequence_output' measures the task "
                       "gradients at the encoder output: with loss_weighting 'grad_norm' it needs "
                       f"train.grad_norm_scope = 'sequence_output' (got {self.grad_norm_scope!r})")
    if self.fixed_loss_weights:
      fixed_loss_weights_checked(self.fixed_loss_weights)
    if self.new_layers_learning_rate_multiplier <= 0:
      raise ValueError("train.new_layers_learning_rate_multiplier must be positive, got "
                       f"{self.new_layers_learning_rate_multiplier}")
    for name in ("global_batch_size", "train_steps", "checkpoint_every_steps",
                 "validation_every_steps", "log_every_steps"):
      if getattr(self, name) <= 0:
        raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")


def fixed_loss_weights_checked(weights, num_tasks=len(TASKS)):
  """`train.fixed_loss_weights` as a list of L floats; raises ValueError naming the option.

  Non-negative, not all zero, and not required to sum to 1 (e.g. [0, 0, 1] trains TIA alone, a
  diagnostic; [1, 1, 1] is 3x the paper's 1/3 each, which Adam makes nearly equivalent).
  """
  weights = [float(w) for w in weights]
  if len(weights) != num_tasks or any(not w >= 0 for w in weights) or not any(weights):
    raise ValueError(f"train.fixed_loss_weights = {weights}: expected {num_tasks} non-negative "
                     f"weights ({', '.join(TASKS)}), not all zero")
  return weights
