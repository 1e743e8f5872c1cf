"""`log_png`: puts a PNG file written by the figure code into TensorBoard's Images tab."""

import tensorflow as tf


def log_png(png_path, log_dir, tag, step):
  """Writes the PNG at `png_path` as one `tf.summary.image` event in `log_dir`.

  Args:
    png_path: an existing PNG file (RGB or RGBA; logged as RGB uint8 [1, H, W, 3]).
    log_dir: TensorBoard folder (created when missing); TensorBoard shows it as one run.
    tag: the image's tag, e.g. "figures/loss_weights".
    step: int, the step the image is shown at.

  Returns:
    `log_dir`.
  """
  with tf.io.gfile.GFile(png_path, "rb") as f:
    image = tf.io.decode_png(f.read(), channels=3)  # uint8 [H, W, 3]
  tf.io.gfile.makedirs(log_dir)
  writer = tf.summary.create_file_writer(log_dir)
  with writer.as_default():
    tf.summary.image(tag, image[tf.newaxis], step=int(step), max_outputs=1)
  writer.flush()
  writer.close()
  return log_dir
