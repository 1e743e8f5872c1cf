"""`fashionbert evaluate`: TIA accuracy and Rank@1/5/10 in both directions (paper 3.1, Table 1).

  fashionbert evaluate --config configs/toy.yaml                   # latest checkpoint of the run
  fashionbert evaluate --config configs/toy.yaml --checkpoint runs/toy/ckpt-2000
  fashionbert evaluate --config configs/toy.yaml --saved_model exports/toy/1700000000
  fashionbert evaluate --config configs/toy.yaml --precision bfloat16   # = eval.mixed_precision
  fashionbert evaluate --config configs/toy.yaml --jit_compile          # = eval.jit_compile

Prints a table laid out like the paper's Table 1 and writes `<train.model_dir>/eval/results.json`
(or `eval.output_dir`) and TensorBoard text there.
"""

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.cli import common_flags
from fashionbert_tf.cli import inference_flags
from fashionbert_tf.evaluation import evaluate

# Shared by `evaluate` and `export` (both may be imported in one process, e.g. by tests).
if "checkpoint" not in flags.FLAGS:
  flags.DEFINE_string(
      "checkpoint", None,
      "Checkpoint prefix (runs/x/ckpt-N) or folder; default: the latest in train.model_dir.")
SAVED_MODEL = flags.DEFINE_string(
    "saved_model", None,
    "Evaluate an exported SavedModel version folder (<export_dir>/<version>) instead of a "
    "checkpoint.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if flags.FLAGS.checkpoint and SAVED_MODEL.value:
    raise app.UsageError("give --checkpoint or --saved_model, not both")
  logging.set_verbosity(logging.INFO)
  config = common_flags.config_from_flags()
  try:
    inference_flags.apply_to_eval_config(config)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if SAVED_MODEL.value and inference_flags.any_given():
    raise app.UsageError("--precision / --jit_compile / --length_bucket apply to checkpoints; a "
                         "SavedModel is scored as exported (export it with those flags)")
  evaluate.run_evaluation(config, checkpoint=flags.FLAGS.checkpoint,
                          saved_model=SAVED_MODEL.value)


if __name__ == "__main__":
  app.run(main)
