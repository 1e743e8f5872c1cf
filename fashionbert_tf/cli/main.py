"""`fashionbert <command> [--flags]`: one console script, one absl app per command.

Each command lives in its own module under `fashionbert_tf/cli/` with a `main(argv)` for
`absl.app.run`; only the chosen command's module (and so only its flags) is imported.
"""

import importlib
import sys

COMMANDS = {
    "demo": ("fashionbert_tf.cli.demo",
             "toy data -> TFRecords -> pretrain -> evaluate, offline, on the embedded default data"),
    "prepare-data": ("fashionbert_tf.cli.prepare_data",
                     "Fashion-Gen HDF5 -> sharded TFRecords + fixed retrieval candidate sets"),
    "pretrain": ("fashionbert_tf.cli.pretrain", "pretrain FashionBERT (MLM + MPM + TIA)"),
    "evaluate": ("fashionbert_tf.cli.evaluate", "TIA accuracy and Rank@1/5/10 both directions"),
    "export": ("fashionbert_tf.cli.export", "SavedModel for TF Serving"),
    "import-checkpoint": ("fashionbert_tf.cli.import_checkpoint",
                          "the authors' released TF1 FashionBERT -> a run directory"),
    "finetune": ("fashionbert_tf.cli.finetune",
                 "fine-tune for search clicks on <query, title, image> logs (paper 3.4)"),
    "evaluate-search": ("fashionbert_tf.cli.evaluate_search",
                        "Table 4: accuracy, AUC, batch-1 latency with / without VSL"),
    "search": ("fashionbert_tf.cli.search",
               "two-stage retrieval for a query: ScaNN recall, FashionBERT re-rank, PNG strip"),
    "evaluate-retrieval": ("fashionbert_tf.cli.evaluate_retrieval",
                           "Recall@k / NDCG@10 / queries per second of the two-stage search"),
}


# Errors about the user's data, checkpoints or run (raised with a message naming what is wrong and
# where): printed as one line, exit status 1, no traceback. Matched by name so that this module
# imports no TensorFlow before a command is chosen. FileNotFoundError: the project's own checks
# raise it with the missing path and what to do (a config pointing at absent data or checkpoints).
USER_FACING_ERRORS = ("NonFiniteLossError", "RecordFileError", "FashionGenFormatError",
                      "NotEnoughProductsError", "CheckpointMismatchError", "FileNotFoundError",
                      "SearchLogFormatError", "MissingProductImageError")


def reporting_user_errors(command, command_main):
  """`command_main` with the USER_FACING_ERRORS turned into one line on stderr and exit 1, and a
  `UsageError` into one line too (absl's own handler prints the module docstring above it)."""
  from absl import app  # pylint: disable=g-import-not-at-top

  def run(argv):
    try:
      return command_main(argv)
    except app.UsageError as error:
      print(f"fashionbert {command}: {error}", file=sys.stderr)
      sys.exit(error.exitcode)
    except Exception as error:  # pylint: disable=broad-except
      if type(error).__name__ not in USER_FACING_ERRORS:
        raise
      print(f"fashionbert {command}: {type(error).__name__}: {error}", file=sys.stderr)
      sys.exit(1)
  return run


def usage():
  lines = ["usage: fashionbert <command> [--flags]   (fashionbert <command> --helpfull for flags)",
           "", "commands:"]
  lines += [f"  {name:<14} {help_text}" for name, (_, help_text) in COMMANDS.items()]
  return "\n".join(lines)


def main():
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print(usage(), file=sys.stderr)
    sys.exit(0 if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help") else 2)
  command = sys.argv[1]
  module = importlib.import_module(COMMANDS[command][0])
  sys.argv = [f"fashionbert {command}"] + sys.argv[2:]
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(reporting_user_errors(command, module.main))


if __name__ == "__main__":
  main()
