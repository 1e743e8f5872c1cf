"""`fashionbert evaluate`: TIA accuracy and Rank@1/5/10 in both directions (paper 3.1, Table 1).

  fashionbert evaluate --config configs/toy.yaml                   # latest checkpoint of the run
  fashionbert evaluate --config configs/toy.yaml --checkpoint runs/toy/ckpt-2000
  fashionbert evaluate --config configs/toy.yaml --saved_model exports/toy/1700000000
  fashionbert evaluate --config configs/toy.yaml --precision bfloat16   # = eval.mixed_precision
  fashionbert evaluate --config configs/toy.yaml --jit_compile          # = eval.jit_compile
  fashionbert evaluate --config runs/authors/params.yaml \
      --authors_img2txt 'eval_img2txt/*' --authors_txt2img 'eval_txt2img/*'  # their files

Prints a table laid out like the paper's Table 1 and writes `<train.model_dir>/eval/results.json`
(or `eval.output_dir`) and TensorBoard text there.
"""

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.cli import common_flags
from fashionbert_tf.cli import inference_flags
from fashionbert_tf.data import easytransfer_files
from fashionbert_tf.evaluation import easytransfer_eval
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

# The authors' published evaluation files (docs/authors_model.md; evaluation/easytransfer_eval.py).
AUTHORS_IMG2TXT = flags.DEFINE_string(
    "authors_img2txt", None,
    "The authors' image-to-text evaluation files (comma-separated paths / globs / a .list_csv "
    "file list): scored and analysed as their prediction_analysis does, instead of our protocol.")
AUTHORS_TXT2IMG = flags.DEFINE_string(
    "authors_txt2img", None, "The authors' text-to-image evaluation files (as --authors_img2txt).")
RANK_BY = flags.DEFINE_enum(
    "rank_by", "match_logit", ["match_logit", "p_match"],
    "With the authors' files: rank by tia_logits[:, 1] (match_logit, their analysis) or by "
    "softmax P(match) (p_match, our protocol); both are computed and saved.")
AUTHORS_SCHEMA = flags.DEFINE_string(
    "authors_schema", None, "Input schema of the authors' evaluation files; default theirs "
    "(image_feature:float:131072,...).")


def _authors_files_main():
  """`--authors_img2txt` / `--authors_txt2img`: scores the authors' files (one-line errors)."""
  if SAVED_MODEL.value:
    raise app.UsageError("score the authors' files from a checkpoint (--checkpoint or the run's "
                         "latest): their ranking needs the raw TIA logits, an export gives "
                         "P(match) only")
  config = common_flags.config_from_flags()
  try:
    inference_flags.apply_to_eval_config(config)
    files = {}
    if AUTHORS_IMG2TXT.value:
      files["image_to_text"] = easytransfer_files.expand_paths(AUTHORS_IMG2TXT.value)
    if AUTHORS_TXT2IMG.value:
      files["text_to_image"] = easytransfer_files.expand_paths(AUTHORS_TXT2IMG.value)
    easytransfer_eval.run_evaluation(config, files, checkpoint=flags.FLAGS.checkpoint,
                                     rank_by=RANK_BY.value, schema=AUTHORS_SCHEMA.value)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if flags.FLAGS.checkpoint and SAVED_MODEL.value:
    raise app.UsageError("give --checkpoint or --saved_model, not both")
  logging.set_verbosity(logging.INFO)
  if AUTHORS_IMG2TXT.value or AUTHORS_TXT2IMG.value:
    return _authors_files_main()
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
