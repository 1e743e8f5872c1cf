"""The paper's Figure 4 for a pre-training run: the adaptive loss weights w_i over training steps.

`write_loss_weight_figure(model_dir)` reads the run's TensorBoard scalars, as
`callbacks.ScalarSummaries` writes them:

  <model_dir>/train/        weight_mlm, weight_mpm, weight_tia, tia_accuracy (every
                            `train.log_every_steps` steps, the mean since the last write)
  <model_dir>/validation/   tia_accuracy (the `val_` prefix of the loop's logs is stripped there;
                            optional: runs without validation have no such folder)

and draws one PNG with two panels sharing the step axis:

  top     w_MLM, w_MPM, w_TIA over steps (paper Figure 4), with 1/L = 1/3 (the `fixed` mode) dotted;
  bottom  TIA accuracy over steps, training and (when logged) validation, chance level 0.5 dashed.

The PNG goes to `<model_dir>/figure4_loss_weights.png`, and the same image into TensorBoard's
Images tab under `<model_dir>/figures/` (tag `figures/loss_weights`, at the last logged step).
Drawing uses matplotlib's Agg canvas directly (no pyplot, no display, no global backend change).
"""

import glob
import os

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.utils import tensorboard_images

FIGURE_FILE = "figure4_loss_weights.png"
FIGURES_LOG_DIR = "figures"
IMAGE_TAG = "figures/loss_weights"
WEIGHT_TAGS = ("weight_mlm", "weight_mpm", "weight_tia")
WEIGHT_LABELS = {"weight_mlm": "$w_{MLM}$", "weight_mpm": "$w_{MPM}$", "weight_tia": "$w_{TIA}$"}
TIA_ACCURACY_TAG = "tia_accuracy"   # the same tag in train/ and validation/
CHANCE_LEVEL = 0.5
FIGURE_SIZE_INCHES = (8.0, 6.0)
DPI = 100


def _scalar_of(value):
  """The float of one `Summary.Value`, or None when it is not a scalar (an image, text, ...).

  TF1 summaries store `simple_value`; TF2's `tf.summary.scalar` stores a rank-0 `tensor`.
  """
  kind = value.WhichOneof("value")
  if kind == "simple_value":
    return float(value.simple_value)
  if kind == "tensor":
    array = tf.make_ndarray(value.tensor)
    if array.size == 1 and np.issubdtype(array.dtype, np.number):
      return float(array.reshape(()))
  return None


def _events(path):
  """The `Event` protos of one event file (a TFRecord file), in order.

  A truncated last record (a run still writing, or killed mid-write) ends the file with a warning
  instead of an error, so a live run can be drawn.
  """
  iterator = iter(tf.data.TFRecordDataset(path))
  while True:
    try:
      record = next(iterator)
    except StopIteration:
      return
    except tf.errors.DataLossError as error:
      logging.warning("%s: stopped at an unreadable record (%s)", path, error.message.strip())
      return
    yield tf.compat.v1.Event.FromString(record.numpy())


def read_scalars(log_dir, tags=None):
  """Every scalar series in the TensorBoard event files of one folder.

  Args:
    log_dir: folder holding `events.out.tfevents.*` files (not searched recursively).
    tags: optional iterable of tags to keep (others are skipped); None keeps all.

  Returns:
    {tag: (steps int64 [N], values float64 [N])}, steps ascending and distinct. A step logged
    twice (e.g. by a resumed run, or in two event files) keeps its latest value by wall time.

  Raises:
    FileNotFoundError: `log_dir` holds no event files (the message names the folder).
  """
  files = sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*")))
  if not files:
    raise FileNotFoundError(
        f"no TensorBoard event files (events.out.tfevents.*) in {log_dir}; is it a pre-training "
        "run's train/ or validation/ folder (`fashionbert pretrain` writes them)?")
  wanted = None if tags is None else set(tags)
  points = {}  # tag -> {step: (wall_time, value)}
  for path in files:
    for event in _events(path):
      for value in event.summary.value:
        if wanted is not None and value.tag not in wanted:
          continue
        number = _scalar_of(value)
        if number is None:
          continue
        series = points.setdefault(value.tag, {})
        previous = series.get(event.step)
        if previous is None or event.wall_time >= previous[0]:
          series[event.step] = (event.wall_time, number)
  result = {}
  for tag, series in points.items():
    steps = np.array(sorted(series), np.int64)
    result[tag] = (steps, np.array([series[int(s)][1] for s in steps], np.float64))
  return result


def read_run_curves(model_dir):
  """The series Figure 4 needs from a run: (train {tag: (steps, values)}, validation accuracy).

  Returns:
    train: {"weight_mlm", "weight_mpm", "weight_tia", and "tia_accuracy" when logged}:
      (steps int64 [N], values float64 [N]).
    validation: (steps, values) of validation `tia_accuracy`, or None when the run has no
      validation logs.

  Raises:
    FileNotFoundError: no event files in `<model_dir>/train`.
    ValueError: the train logs lack a weight tag (the message names the folder and the tags found).
  """
  train_dir = os.path.join(model_dir, "train")
  train = read_scalars(train_dir, WEIGHT_TAGS + (TIA_ACCURACY_TAG,))
  missing = [tag for tag in WEIGHT_TAGS if tag not in train]
  if missing:
    found = sorted(read_scalars(train_dir))
    raise ValueError(f"{train_dir}: no scalars {missing} (found {found}); Figure 4 needs the "
                     "loss weights `callbacks.ScalarSummaries` logs during pre-training")
  validation = None
  validation_dir = os.path.join(model_dir, "validation")
  if glob.glob(os.path.join(validation_dir, "events.out.tfevents.*")):
    validation = read_scalars(validation_dir, [TIA_ACCURACY_TAG]).get(TIA_ACCURACY_TAG)
  return train, validation


def _marker(steps):
  return "o" if len(steps) <= 60 else None


def draw_loss_weight_figure(train, validation, title):
  """A matplotlib `Figure` (not shown) with the two panels of the module docstring.

  Args:
    train: {tag: (steps [N], values [N])} with the three weight tags, optionally `tia_accuracy`.
    validation: (steps [M], values [M]) of validation TIA accuracy, or None.
    title: the figure's title.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=FIGURE_SIZE_INCHES, dpi=DPI, layout="constrained")
  weights_axes, accuracy_axes = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
  for tag in WEIGHT_TAGS:
    steps, values = train[tag]
    weights_axes.plot(steps, values, label=WEIGHT_LABELS[tag], marker=_marker(steps),
                      markersize=3)
  weights_axes.axhline(1.0 / len(WEIGHT_TAGS), color="gray", linestyle=":", linewidth=1,
                       label="1/L (fixed)")
  weights_axes.set_ylabel("loss weight $w_i$")
  weights_axes.set_title(title)
  weights_axes.legend(loc="best", fontsize="small")
  weights_axes.grid(alpha=0.3)

  if TIA_ACCURACY_TAG in train:
    steps, values = train[TIA_ACCURACY_TAG]
    accuracy_axes.plot(steps, values, label="train", marker=_marker(steps), markersize=3)
  if validation is not None:
    steps, values = validation
    accuracy_axes.plot(steps, values, label="validation", marker="s", markersize=4)
  accuracy_axes.axhline(CHANCE_LEVEL, color="black", linestyle="--", linewidth=1,
                        label="chance (0.5)")
  accuracy_axes.set_ylim(-0.02, 1.02)
  accuracy_axes.set_ylabel("TIA accuracy")
  accuracy_axes.set_xlabel("training step")
  accuracy_axes.legend(loc="best", fontsize="small")
  accuracy_axes.grid(alpha=0.3)
  return figure


def write_loss_weight_figure(model_dir, output_path=None, log_to_tensorboard=True):
  """Reads a run's logs, writes the Figure-4 PNG and (optionally) logs it to TensorBoard.

  Args:
    model_dir: the pre-training run (`train.model_dir`), with `train/` (and maybe `validation/`)
      TensorBoard logs.
    output_path: the PNG; default `<model_dir>/figure4_loss_weights.png`.
    log_to_tensorboard: also write the image to `<model_dir>/figures/` (tag `figures/loss_weights`).

  Returns:
    The PNG's path (about 800x600 pixels).

  Raises:
    FileNotFoundError / ValueError: see `read_run_curves`.
  """
  train, validation = read_run_curves(model_dir)
  output_path = output_path or os.path.join(model_dir, FIGURE_FILE)
  name = os.path.basename(os.path.normpath(model_dir))
  figure = draw_loss_weight_figure(train, validation,
                                   f"Adaptive loss weights (paper Fig. 4), run {name}")
  directory = os.path.dirname(output_path)
  if directory:
    tf.io.gfile.makedirs(directory)
  figure.savefig(output_path, format="png")
  if log_to_tensorboard:
    last_step = max(int(train[tag][0][-1]) for tag in WEIGHT_TAGS)
    tensorboard_images.log_png(output_path, os.path.join(model_dir, FIGURES_LOG_DIR), IMAGE_TAG,
                               last_step)
  return output_path
