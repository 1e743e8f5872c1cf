"""`fashionbert evaluate-search`: the paper's Table 4 (accuracy, AUC, batch-1 latency with and
without VSL) for the fine-tuned search models.

  fashionbert evaluate-search --config configs/toy_search.yaml
  fashionbert evaluate-search --config configs/toy_search.yaml --variants fashionbert,oribert \
      --layers 2

Each (variant, layers) row reads the run `fashionbert finetune` made with
`model.search_variant=<variant>,model.num_layers=<layers>` under `search.runs_dir`. Prints the
table and writes `<search.output_dir or search.runs_dir/table4>/table4.json`.
"""

from absl import app
from absl import flags

from fashionbert_tf.cli import common_flags
from fashionbert_tf.configs import search as search_config
from fashionbert_tf.search import click_evaluation

VARIANTS = flags.DEFINE_list(
    "variants", None, "Search variants (oribert, bert_img, fashionbert); default "
    "search.evaluate_variants.")
LAYERS = flags.DEFINE_list("layers", None, "Layer counts; default search.evaluate_layers.")


def main(argv):
  config = common_flags.start_command(argv)
  variants = VARIANTS.value
  for variant in variants or ():
    if variant not in search_config.SEARCH_VARIANTS:
      raise app.UsageError(f"--variants: unknown variant {variant!r}; expected one of "
                           f"{search_config.SEARCH_VARIANTS}")
  try:
    layers = [int(k) for k in LAYERS.value] if LAYERS.value else None
  except ValueError:
    raise app.UsageError(f"--layers must be integers, got {LAYERS.value}") from None
  with common_flags.missing_files_as_usage_error():
    click_evaluation.run_search_evaluation(config, variants, layers)


if __name__ == "__main__":
  app.run(main)
