"""`fashionbert export`: a SavedModel for TF Serving under `<export_dir>/<version>/`.

  fashionbert export --config configs/toy.yaml --export_dir exports/toy
  fashionbert export --config configs/toy.yaml --checkpoint runs/toy/ckpt-2000 \
      --export_dir exports/toy --version 2
  fashionbert export --config configs/toy.yaml --export_dir exports/toy_bf16 --precision bfloat16
  fashionbert export --config configs/toy.yaml --export_dir exports/toy_xla --jit_compile

Signatures `serving_default` (text, image bytes -> match_probability) and `score_features`
(token ids + precomputed patch features -> match_probability); see fashionbert_tf/serving/README.md.

A fine-tuned search model (paper 3.4) exports the same way with `--search_run`:

  fashionbert export --search_run runs/toy_search/fashionbert-L2 --export_dir exports/toy_search \
      --version 1

Signatures `serving_default` (query, title, image bytes -> click_probability) and `score_features`
(layout ids + patch features -> click_probability); see fashionbert_tf/serving/search_serving_module.py.
"""

import os

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.cli import common_flags
from fashionbert_tf.cli import inference_flags
from fashionbert_tf.serving import export
from fashionbert_tf.serving import search_export

# Shared by `evaluate` and `export` (both may be imported in one process, e.g. by tests).
if "checkpoint" not in flags.FLAGS:
  flags.DEFINE_string(
      "checkpoint", None,
      "Checkpoint prefix (runs/x/ckpt-N) or folder; default: the latest in train.model_dir.")
EXPORT_DIR = flags.DEFINE_string(
    "export_dir", "exports/fashionbert",
    "Base path of the servable; the version folder is created below it (TF Serving layout).")
VERSION = flags.DEFINE_integer(
    "version", None, "Version number (positive); default: seconds since the epoch.")
SEARCH_RUN = flags.DEFINE_string(
    "search_run", None,
    "Export a fine-tuned search model (`fashionbert finetune` run folder or checkpoint prefix) "
    "instead: signatures (query, title, image) -> click_probability; --config is not read.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  try:
    precision, jit_compile, length_bucket = inference_flags.export_settings()
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  model_name = "fashionbert"
  if SEARCH_RUN.value:
    if flags.FLAGS.checkpoint:
      raise app.UsageError("--search_run names the run or checkpoint itself: drop --checkpoint")
    if precision != "float32" or jit_compile:
      raise app.UsageError("--search_run exports float32 without XLA: drop --precision / "
                           "--jit_compile")
    path = search_export.export_search_model(SEARCH_RUN.value, EXPORT_DIR.value,
                                             version=VERSION.value)
    model_name = search_export.MODEL_NAME
  else:
    config = common_flags.config_from_flags()
    path = export.export_saved_model(config, EXPORT_DIR.value, checkpoint=flags.FLAGS.checkpoint,
                                     version=VERSION.value, precision=precision,
                                     jit_compile=jit_compile, length_bucket=length_bucket)
  print(f"SavedModel for TF Serving: {path}\n"
        f"  inspect: saved_model_cli show --dir {path} --all\n"
        f"  serve:   tensorflow_model_server --rest_api_port=8501 --model_name={model_name} "
        f"--model_base_path={os.path.abspath(EXPORT_DIR.value)}"
        f"{' --xla_cpu_compilation_enabled=true' if jit_compile else ''}", flush=True)


if __name__ == "__main__":
  app.run(main)
