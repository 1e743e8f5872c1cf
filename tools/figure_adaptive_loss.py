"""The paper's Figures 3 and 4 over several seeds: FashionBERT with and without adaptive loss.

  python tools/figure_adaptive_loss.py --output docs/experiments/figures/adaptive_loss.png \
      --group "adaptive (Eq. 6)=runs/toy,runs/toy_seed43" \
      --group "fixed 1/L=runs/toy_fixed,runs/toy_fixed_seed43"

Each `--group LABEL=DIR,DIR,...` names finished pre-training runs (one per seed) that
`fashionbert evaluate` has scored (`<DIR>/eval/results.json`). Printed, as Markdown:

  - Figure 3: per group, the mean and spread (min-max over seeds) of TIA accuracy and Rank@1/5/10
    in both directions, and every run's own numbers;
  - the validation TIA accuracy curve per group (mean, min, max over seeds at each logged step)
    and the first step each run reaches 0.60 and 0.75;
  - Figure 4: the mean loss weights w_MLM, w_MPM, w_TIA per group at a few steps.

The PNG has three panels: the Figure 3 metrics as bars with min-max whiskers, validation TIA
accuracy over steps (mean line, min-max band), and w_i over steps (mean over seeds).
"""

import json
import os

from absl import app
from absl import flags
import numpy as np

from fashionbert_tf.evaluation import rank_at_k
from fashionbert_tf.training import loss_weight_figure

GROUPS = flags.DEFINE_multi_string("group", [], "LABEL=RUN_DIR,RUN_DIR,...; repeatable.")
OUTPUT = flags.DEFINE_string("output", "adaptive_loss.png", "PNG to write.")
WEIGHT_STEPS = flags.DEFINE_list("weight_steps", ["20", "100", "300", "600", "1000"],
                                 "steps at which to print the mean loss weights")

METRICS = ("accuracy", "rank@1", "rank@5", "rank@10")
LEVELS = (0.60, 0.75)


def parse_group(spec):
  """'LABEL=DIR,DIR' -> (label, [dirs]); raises app.UsageError naming the spec."""
  label, separator, dirs = spec.rpartition("=")
  runs = [d for d in dirs.split(",") if d]
  if not separator or not label or not runs:
    raise app.UsageError(f"--group {spec!r}: expected LABEL=RUN_DIR,RUN_DIR,...")
  return label, runs


def read_run(model_dir):
  """One run's evaluation numbers, validation TIA curve and training loss weights."""
  results_path = os.path.join(model_dir, "eval", "results.json")
  if not os.path.exists(results_path):
    raise app.UsageError(f"{results_path} is missing: run `fashionbert evaluate` on {model_dir}")
  with open(results_path, encoding="utf-8") as handle:
    results = json.load(handle)
  try:
    train, validation = loss_weight_figure.read_run_curves(model_dir)
  except (FileNotFoundError, ValueError) as error:
    raise app.UsageError(str(error)) from None
  if validation is None:
    raise app.UsageError(f"{model_dir} has no validation logs (train.validation_steps was 0)")
  metrics = {(direction, metric): results[direction][metric]
             for direction in rank_at_k.DIRECTIONS for metric in METRICS}
  return {"dir": model_dir, "metrics": metrics, "validation": validation,
          "weights": {tag: train[tag] for tag in loss_weight_figure.WEIGHT_TAGS}}


def first_step_reaching(steps, values, level):
  reached = np.nonzero(np.asarray(values) >= level)[0]
  return int(steps[reached[0]]) if len(reached) else None


def common_curve(series):
  """[(steps, values)] of several runs -> (steps both runs logged, values [runs, steps])."""
  steps = sorted(set.intersection(*[set(s.tolist()) for s, _ in series]))
  values = np.array([[dict(zip(s.tolist(), v))[step] for step in steps] for s, v in series])
  return np.array(steps), values


def summarize(groups):
  """The Markdown printed by the tool (module docstring)."""
  lines = ["Figure 3: mean (min-max) over seeds, held-out products", "",
           "| runs | direction | accuracy | Rank@1 | Rank@5 | Rank@10 |", "|---|---|---|---|---|---|"]
  for label, runs in groups:
    for direction in rank_at_k.DIRECTIONS:
      cells = []
      for metric in METRICS:
        values = 100 * np.array([run["metrics"][(direction, metric)] for run in runs])
        cells.append(f"{values.mean():.1f} ({values.min():.1f}-{values.max():.1f})")
      lines.append(f"| {label} ({len(runs)} seeds) | {direction} | " + " | ".join(cells) + " |")
  lines += ["", "Every run:", "", "| run | " + " | ".join(
      f"{d} {m}" for d in rank_at_k.DIRECTIONS for m in METRICS) + " |",
            "|---|" + "---|" * (len(METRICS) * len(rank_at_k.DIRECTIONS))]
  for label, runs in groups:
    for run in runs:
      lines.append(f"| {label}: {run['dir']} | " + " | ".join(
          f"{100 * run['metrics'][(d, m)]:.1f}" for d in rank_at_k.DIRECTIONS for m in METRICS)
                   + " |")
  lines += ["", "Validation TIA accuracy (mean over seeds, min-max):", ""]
  for label, runs in groups:
    steps, values = common_curve([run["validation"] for run in runs])
    lines.append(f"- {label}: " + ", ".join(
        f"{step}: {values[:, i].mean():.2f} ({values[:, i].min():.2f}-{values[:, i].max():.2f})"
        for i, step in enumerate(steps)))
    for run in runs:
      reached = [first_step_reaching(*run["validation"], level) for level in LEVELS]
      lines.append(f"  - {run['dir']}: reaches 0.60 at step {reached[0]}, 0.75 at {reached[1]}")
  lines += ["", "Figure 4: mean loss weights w_MLM / w_MPM / w_TIA (first logged step at or after):",
            ""]
  for label, runs in groups:
    cells = []
    for wanted in (int(s) for s in WEIGHT_STEPS.value):
      row = []
      for tag in loss_weight_figure.WEIGHT_TAGS:
        values = []
        for run in runs:
          steps, series = run["weights"][tag]
          at = np.nonzero(steps >= wanted)[0]
          if len(at):
            values.append(series[at[0]])
        row.append(f"{np.mean(values):.3f}" if values else "-")
      cells.append(f"step {wanted}: " + " / ".join(row))
    lines.append(f"- {label}: " + "; ".join(cells))
  return "\n".join(lines)


def draw(groups, path):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=(14, 4.5), dpi=100)
  FigureCanvasAgg(figure)
  bars, curves, weights = (figure.add_subplot(1, 3, i) for i in (1, 2, 3))
  names = [f"{'I2T' if d.startswith('image') else 'T2I'} {m}" for d in rank_at_k.DIRECTIONS
           for m in METRICS]
  width = 0.8 / len(groups)
  for index, (label, runs) in enumerate(groups):
    values = 100 * np.array([[run["metrics"][(d, m)] for d in rank_at_k.DIRECTIONS
                              for m in METRICS] for run in runs])
    mean = values.mean(0)
    positions = np.arange(len(names)) + index * width
    bars.bar(positions, mean, width, label=label,
             yerr=[mean - values.min(0), values.max(0) - mean], capsize=2)
    steps, curve = common_curve([run["validation"] for run in runs])
    line, = curves.plot(steps, curve.mean(0), marker="o", markersize=3, label=label)
    curves.fill_between(steps, curve.min(0), curve.max(0), alpha=0.2, color=line.get_color())
    for tag, style in zip(loss_weight_figure.WEIGHT_TAGS, ("-", "--", ":")):
      w_steps, w = common_curve([run["weights"][tag] for run in runs])
      weights.plot(w_steps, w.mean(0), style, color=line.get_color(),
                   label=f"{label} {loss_weight_figure.WEIGHT_LABELS[tag]}")
  bars.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=60, fontsize=7)
  bars.set_ylabel("%")
  bars.set_title("Figure 3: held-out evaluation (min-max over seeds)")
  bars.legend(fontsize=7)
  curves.axhline(0.5, color="grey", linestyle="--", linewidth=1)
  curves.set_xlabel("training step")
  curves.set_ylabel("validation TIA accuracy")
  curves.set_title("validation TIA accuracy (mean, min-max)")
  curves.legend(fontsize=7)
  weights.set_xlabel("training step")
  weights.set_ylabel("$w_i$")
  weights.set_title("Figure 4: loss weights (mean over seeds)")
  weights.legend(fontsize=6)
  for axes in (bars, curves, weights):
    axes.grid(alpha=0.3)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if len(GROUPS.value) < 1:
    raise app.UsageError("give at least one --group LABEL=RUN_DIR,RUN_DIR,...")
  groups = [(label, [read_run(d) for d in dirs])
            for label, dirs in (parse_group(spec) for spec in GROUPS.value)]
  print(summarize(groups))
  draw(groups, OUTPUT.value)
  print(f"\nwrote {OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
