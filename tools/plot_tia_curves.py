"""Validation TIA accuracy over steps of several pre-training runs, in one PNG (and a table).

  python tools/plot_tia_curves.py --output runs/tia_curves.png \
      --run "raw features=runs/raw" --run "standardized=runs/toy"

Each `--run LABEL=MODEL_DIR` reads `<MODEL_DIR>/validation/` (the `tia_accuracy` scalar that
`fashionbert pretrain` logs every `train.validation_every_steps`) and draws it against the step,
with the chance level 0.5 dashed and the 0.75 goal dotted; the same numbers are printed as a table
with, per run, the first step at which validation TIA accuracy reached 0.60 and 0.75.
"""

import os

from absl import app
from absl import flags
import numpy as np

from fashionbert_tf.training import loss_weight_figure

RUNS = flags.DEFINE_multi_string("run", [], "LABEL=MODEL_DIR of a pre-training run; repeatable.")
OUTPUT = flags.DEFINE_string("output", "tia_curves.png", "PNG to write.")
TITLE = flags.DEFINE_string("title", "Validation TIA accuracy", "Figure title.")


def first_step_reaching(steps, values, level):
  """The first step whose value is >= level, or None."""
  reached = np.nonzero(np.asarray(values) >= level)[0]
  return int(steps[reached[0]]) if len(reached) else None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not RUNS.value:
    raise app.UsageError("give at least one --run LABEL=MODEL_DIR")
  curves = []
  for spec in RUNS.value:
    label, separator, model_dir = spec.rpartition("=")  # labels may hold "=", paths rarely do
    if not separator or not label or not model_dir:
      raise app.UsageError(f"--run {spec!r}: expected LABEL=MODEL_DIR")
    try:
      scalars = loss_weight_figure.read_scalars(os.path.join(model_dir, "validation"),
                                                ["tia_accuracy"])
    except FileNotFoundError as error:
      raise app.UsageError(str(error)) from None
    if "tia_accuracy" not in scalars:
      raise app.UsageError(f"{model_dir}/validation has no tia_accuracy scalar")
    curves.append((label, *scalars["tia_accuracy"]))

  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=(8, 4.5), dpi=100)
  FigureCanvasAgg(figure)
  axes = figure.add_subplot(1, 1, 1)
  for label, steps, values in curves:
    axes.plot(steps, values, marker="o", markersize=3, label=label)
  axes.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
  axes.axhline(0.75, color="grey", linestyle=":", linewidth=1, label="0.75")
  axes.set_xlabel("training step")
  axes.set_ylabel("validation TIA accuracy")
  axes.set_ylim(0.3, 1.0)
  axes.set_title(TITLE.value)
  axes.legend(loc="upper left", fontsize=8)
  axes.grid(alpha=0.3)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(OUTPUT.value)), exist_ok=True)
  figure.savefig(OUTPUT.value)

  print(f"{'run':<40}{'steps':>7}{'last':>7}{'best':>7}{'>=0.60 at':>11}{'>=0.75 at':>11}")
  for label, steps, values in curves:
    reached = [first_step_reaching(steps, values, level) for level in (0.6, 0.75)]
    print(f"{label:<40}{int(steps[-1]):>7}{values[-1]:>7.3f}{values.max():>7.3f}"
          + "".join(f"{'-' if r is None else r:>11}" for r in reached))
  print(f"wrote {OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
