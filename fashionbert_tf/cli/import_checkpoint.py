"""`fashionbert import-checkpoint`: a released checkpoint -> a FashionBERT run directory.

  fashionbert import-checkpoint --format easytransfer \
      --checkpoint fashionbert_pretrain_model_fin/model.ckpt-54198 --output runs/authors

Writes `<output>/params.yaml` and `<output>/ckpt-<global_step>` (as `fashionbert pretrain` does),
which `fashionbert evaluate`, `export`, `finetune` and the Python API read like any run. The data /
train / eval sections come from --config (default configs/toy.yaml) and --params_override; the
model section is the checkpoint's. See docs/authors_model.md.
"""

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.cli import common_flags
from fashionbert_tf.training import import_checkpoint

FORMATS = ("easytransfer",)

FORMAT = flags.DEFINE_enum(
    "format", "easytransfer", FORMATS,
    "Checkpoint format: easytransfer = the authors' TF1 FashionBERT (EasyTransfer "
    "ImageBertPreTrainedModel, e.g. fashionbert_pretrain_model_fin/model.ckpt-54198).")
# `checkpoint` is shared with `evaluate` / `export` (several commands may be imported in one
# process, e.g. by tests); here it names the TF1 checkpoint prefix (without .index / .data-*).
if "checkpoint" not in flags.FLAGS:
  flags.DEFINE_string(
      "checkpoint", None, "Checkpoint prefix or folder (import-checkpoint: the TF1 checkpoint).")
OUTPUT = flags.DEFINE_string("output", None, "Run directory to create (new or empty).")
NUM_ATTENTION_HEADS = flags.DEFINE_integer(
    "num_attention_heads", 0,
    "Attention heads of the checkpoint (its shapes do not show them); 0 = H / 64 (BERT-base: 12).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS.checkpoint or not OUTPUT.value:
    raise app.UsageError("give --checkpoint=<TF1 checkpoint prefix> and --output=<run directory>")
  if NUM_ATTENTION_HEADS.value < 0:
    raise app.UsageError("--num_attention_heads must be >= 0")
  logging.set_verbosity(logging.INFO)
  try:
    result = import_checkpoint.import_checkpoint(
        flags.FLAGS.checkpoint, OUTPUT.value, config_file=common_flags.CONFIG.value,
        overrides=common_flags.PARAMS_OVERRIDE.value,
        num_attention_heads=NUM_ATTENTION_HEADS.value)
  except (FileNotFoundError, FileExistsError) as error:
    raise app.UsageError(str(error)) from None
  sizes = result["model"]
  print(f"imported {result['variables']} variables ({sizes['num_layers']} layers, "
        f"H={sizes['hidden_size']}, {sizes['num_attention_heads']} heads, "
        f"D={sizes['feature_dim']}; {result['skipped']} training-state variables left alone) "
        f"-> {result['checkpoint']}", flush=True)


if __name__ == "__main__":
  app.run(main)
