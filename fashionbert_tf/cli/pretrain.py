"""`fashionbert pretrain`: pre-train FashionBERT (MLM + MPM + TIA with the adaptive loss).

  fashionbert pretrain --config configs/toy.yaml \\
      [--params_override train.loss_weighting=fixed,train.train_steps=100]

Writes `<train.model_dir>/params.yaml`, checkpoints `ckpt-N`, TensorBoard logs in `train/` and
`validation/`; re-running on the same model_dir resumes from the last checkpoint. SIGTERM / SIGINT
save a checkpoint after the current step and exit with status 128 + the signal number (143 / 130).
"""

import json

from absl import logging

from fashionbert_tf.cli import common_flags
from fashionbert_tf.training import preemption
from fashionbert_tf.training import pretrain


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config = common_flags.config_from_flags()
  summary = pretrain.run_pretraining(config)
  print(json.dumps({key: summary[key] for key in (
      "model_dir", "first_step", "final_step", "stopped_early", "elapsed_seconds",
      "examples_per_second", "train_logs", "validation_logs", "checkpoint", "skipped_batches",
      "interrupted_by")}, indent=2))
  preemption.exit_if_interrupted(summary, "fashionbert pretrain")
