"""`fashionbert finetune`: fine-tune for search click prediction on <query, title, image> (paper 3.4).

  fashionbert finetune --config configs/toy_search.yaml
  fashionbert finetune --config configs/toy_search.yaml \
      --params_override model.search_variant=oribert,model.num_layers=2
  fashionbert finetune --config configs/toy_search.yaml \
      --params_override search.pretrained_checkpoint=runs/toy/ckpt-1000

Starts from the pretraining checkpoint `search.pretrained_checkpoint` (or, for oribert / bert_img,
the original BERT: `search.baseline_init`), trains `train.train_steps` steps in
`<search.runs_dir>/<variant>-L<layers>` (or `train.model_dir`), resumes a run found there. The toy
search logs are generated first when missing. SIGTERM / SIGINT save a checkpoint after the current
step and exit with status 128 + the signal number (143 / 130). See fashionbert_tf/search/finetune.py.
"""

from absl import app

from fashionbert_tf.cli import common_flags
from fashionbert_tf.search import finetune
from fashionbert_tf.training import preemption


def main(argv):
  config = common_flags.start_command(argv)
  # Missing logs, images or pretraining checkpoint: one line.
  with common_flags.missing_files_as_usage_error():
    summary = finetune.run_finetuning(config)
  validation = summary["validation_logs"]
  print(f"finetune {summary['variant']} ({summary['num_layers']} layers): steps "
        f"{summary['first_step']} -> {summary['final_step']} in {summary['elapsed_seconds']:.0f} s "
        f"({summary['examples_per_second']:.1f} examples/s); run {summary['model_dir']}"
        + ("; validation " + ", ".join(f"{k} {v:.4f}" for k, v in validation.items())
           if validation else ""))
  preemption.exit_if_interrupted(summary, "fashionbert finetune")


if __name__ == "__main__":
  app.run(main)
