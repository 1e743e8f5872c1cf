"""The Figure-4 PNG (`loss_weight_figure`) from TensorBoard logs with the callbacks' own tags."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.training import callbacks
from fashionbert_tf.training import loss_weight_figure

STEPS = (0, 3, 6, 9, 12)


def train_logs(step):
  """The scalars the pre-training loop hands `ScalarSummaries` (a subset), changing with step."""
  return {"loss": 5.0 - 0.1 * step, "weight_mlm": 0.30 + 0.005 * step,
          "weight_mpm": 0.35 - 0.005 * step, "weight_tia": 0.35, "tia_accuracy": 0.5 + 0.01 * step,
          "learning_rate": 1e-3}


def write_run_logs(model_dir, with_validation=True):
  """Logs as a run would: through `callbacks.ScalarSummaries` itself (TF2 tensor scalars)."""
  summaries = callbacks.ScalarSummaries(model_dir, every_steps=3)
  for step in STEPS:
    summaries.on_train_batch_end(step, train_logs(step))
  if with_validation:
    for step in (6, 12):
      summaries.on_epoch_end(step, {"val_loss": 4.0, "val_tia_accuracy": 0.55 + 0.01 * step})
  summaries.on_train_end()


def decode_png(path):
  with open(path, "rb") as f:
    return tf.io.decode_png(f.read()).numpy()


def test_read_scalars_reads_tensor_scalars_as_the_callbacks_write_them(tmp_path):
  model_dir = str(tmp_path / "run")
  write_run_logs(model_dir)
  train, validation = loss_weight_figure.read_run_curves(model_dir)
  steps, values = train["weight_mlm"]
  np.testing.assert_array_equal(steps, STEPS)
  np.testing.assert_allclose(values, [train_logs(s)["weight_mlm"] for s in STEPS], rtol=1e-6)
  np.testing.assert_allclose(train["tia_accuracy"][1], [0.5 + 0.01 * s for s in STEPS], rtol=1e-6)
  # Validation: ScalarSummaries strips the `val_` prefix, so the tag is tia_accuracy there too.
  np.testing.assert_array_equal(validation[0], [6, 12])
  np.testing.assert_allclose(validation[1], [0.61, 0.67], rtol=1e-6)


def test_read_scalars_reads_tf1_simple_values_and_keeps_the_latest_of_a_repeated_step(tmp_path):
  log_dir = tmp_path / "tf1"
  log_dir.mkdir()
  # An event file is a TFRecord file of `Event` protos; TF1 scalars are `simple_value`s.
  with tf.io.TFRecordWriter(str(log_dir / "events.out.tfevents.1.tf1")) as writer:
    for step, value, wall_time in ((1, 0.2, 10.0), (2, 0.4, 11.0), (2, 0.9, 12.0)):
      summary = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag="weight_tia",
                                                                       simple_value=value)])
      writer.write(tf.compat.v1.Event(summary=summary, step=step,
                                      wall_time=wall_time).SerializeToString())
  steps, values = loss_weight_figure.read_scalars(str(log_dir))["weight_tia"]
  np.testing.assert_array_equal(steps, [1, 2])
  np.testing.assert_allclose(values, [0.2, 0.9], rtol=1e-6)


def test_a_truncated_last_record_is_skipped_so_a_live_run_can_be_drawn(tmp_path):
  model_dir = str(tmp_path / "run")
  write_run_logs(model_dir, with_validation=False)
  (path,) = glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))
  with open(path, "rb") as f:
    content = f.read()
  with open(path, "wb") as f:
    f.write(content[:-7])            # the last event is cut mid-record
  scalars = loss_weight_figure.read_scalars(os.path.join(model_dir, "train"))
  # One event per scalar: the last one written is step 12's learning_rate (the last log key).
  np.testing.assert_array_equal(scalars["learning_rate"][0], STEPS[:-1])
  np.testing.assert_array_equal(scalars["weight_tia"][0], STEPS)


def test_figure_png_is_written_decodes_and_is_logged_to_tensorboard(tmp_path):
  model_dir = str(tmp_path / "run")
  write_run_logs(model_dir)
  path = loss_weight_figure.write_loss_weight_figure(model_dir)
  assert path == os.path.join(model_dir, "figure4_loss_weights.png")
  image = decode_png(path)
  height, width = image.shape[:2]
  assert 500 <= height <= 700 and 700 <= width <= 900, image.shape
  assert image[..., :3].std() > 10          # something was drawn, not a blank canvas
  # The same image in TensorBoard's images tab, at the last logged step.
  events = glob.glob(os.path.join(model_dir, "figures", "events.out.tfevents.*"))
  assert events
  images = [(event.step, value) for path in events
            for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value if value.tag == "figures/loss_weights"]
  assert len(images) == 1 and images[0][0] == STEPS[-1]
  logged = tf.make_ndarray(images[0][1].tensor)   # [width, height, encoded PNG]
  assert (int(logged[0]), int(logged[1])) == (width, height)
  np.testing.assert_array_equal(tf.io.decode_png(logged[2], channels=3).numpy(), image[..., :3])


def test_figure_without_validation_logs(tmp_path):
  model_dir = str(tmp_path / "run")
  write_run_logs(model_dir, with_validation=False)
  _, validation = loss_weight_figure.read_run_curves(model_dir)
  assert validation is None
  output = str(tmp_path / "elsewhere" / "fig.png")
  assert loss_weight_figure.write_loss_weight_figure(model_dir, output,
                                                     log_to_tensorboard=False) == output
  assert decode_png(output).shape[0] > 0
  assert not os.path.exists(os.path.join(model_dir, "figures"))


def test_empty_run_folder_fails_naming_the_folder(tmp_path):
  model_dir = tmp_path / "empty_run"
  (model_dir / "train").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=str(model_dir / "train")):
    loss_weight_figure.write_loss_weight_figure(str(model_dir))
  assert not os.path.exists(model_dir / "figure4_loss_weights.png")


def test_logs_without_weights_fail_naming_the_missing_tags(tmp_path):
  log_dir = str(tmp_path / "run" / "train")
  writer = tf.summary.create_file_writer(log_dir)
  with writer.as_default(step=1):
    tf.summary.scalar("loss", 1.0)
  writer.close()
  with pytest.raises(ValueError, match=r"weight_mlm.*found \['loss'\]"):
    loss_weight_figure.read_run_curves(str(tmp_path / "run"))
