"""Precomputes patch features once: copies the TFRecord shards with an added `patch_features`.

  python tools/precompute_patch_features.py --config configs/toy.yaml \
      --output_dir data/toy/tfrecords_features

reads every shard of `data.tfrecord_dir` (with `data.source=tfds`: of the fashion_gen TFDS dataset,
the copies then named `{split}-NNNNN-of-NNNNN.tfrecord`; or --input_pattern), runs the configured backbone
(`model.backbone`, weights `model.backbone_weights`, `model.patch_input_size`, ...) over each image's
8x8 patch grid, and writes shards of the same names into --output_dir (default:
`data.features_tfrecord_dir`, where training reads them; else `<data.tfrecord_dir>_features`) whose
records also carry `patch_features` = tf.io.serialize_tensor([64, D]) stored in
`data.patch_feature_dtype` (float32, or float16 / bfloat16: half the size; read back as float32).
Train on them with `model.use_precomputed_features=true` (and `data.features_tfrecord_dir=<output_dir>`
when --output_dir is given).

Without --checkpoint it then also writes the training images' per-dimension feature statistics
(`model.patch_feature_normalization: standardize`; `fashionbert_tf/modeling/feature_statistics.py`)
from the features it has just written, to `<data.tfrecord_dir>/patch_feature_statistics/`.

With --checkpoint, the features come from a trained FashionBERT checkpoint's own (possibly
fine-tuned) backbone instead of `model.backbone_weights` (the checkpoint holds its statistics).
"""

import os

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.cli import common_flags
from fashionbert_tf.data import pipeline
from fashionbert_tf.modeling import feature_precompute

INPUT_PATTERN = flags.DEFINE_string(
    "input_pattern", "",
    "Glob (or comma-separated globs) of the source shards; empty = every *.tfrecord in "
    "data.tfrecord_dir.")
OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "", "Folder for the copies; empty = data.features_tfrecord_dir, or when that is "
    "empty <data.tfrecord_dir>_features.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per backbone call.")
CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "",
    "Optional FashionBERT checkpoint (<model_dir>/ckpt-N or a model_dir for its latest); its "
    "patch backbone computes the features.")


def _checkpoint_feature_fn(model_config, checkpoint):
  """`compute_patch_features` of a FashionBERT model restored from `checkpoint`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.modeling import model_builder  # pylint: disable=g-import-not-at-top
  path = tf.train.latest_checkpoint(checkpoint) if os.path.isdir(checkpoint) else checkpoint
  if not path:
    raise FileNotFoundError(f"--checkpoint: no checkpoint in {checkpoint}")
  model = model_builder.build_fashionbert(model_config)
  tf.train.Checkpoint(model=model).restore(path).expect_partial()
  logging.info("patch backbone restored from %s", path)
  compute = tf.function(model.compute_patch_features, reduce_retracing=True)
  return lambda images: compute(images).numpy()


def main(argv):
  del argv
  config = common_flags.config_from_flags()
  tfrecord_dir = config.data.tfrecord_dir.rstrip("/")
  input_pattern = INPUT_PATTERN.value or os.path.join(tfrecord_dir, "*.tfrecord")
  output_name = None
  if config.data.source == "tfds" and not INPUT_PATTERN.value:
    # Copies of the fashion_gen TFDS shards, named {split}-NNNNN-of-NNNNN.tfrecord.
    from fashionbert_tf.data.sources import fashion_gen_tfds  # pylint: disable=g-import-not-at-top
    input_pattern = fashion_gen_tfds.feature_source_pattern(config.data)
    output_name = fashion_gen_tfds.feature_copy_name
  output_dir = OUTPUT_DIR.value or pipeline.features_output_dir(config.data)
  feature_fn = None
  if CHECKPOINT.value:
    feature_fn = _checkpoint_feature_fn(config.model, CHECKPOINT.value)
  logging.info("backbone %s (weights %r, feature_dim %d): %s -> %s", config.model.backbone,
               config.model.backbone_weights, config.model.feature_dim, input_pattern, output_dir)
  if CHECKPOINT.value:  # The checkpoint holds its own statistics.
    summary = feature_precompute.precompute_patch_features(
        config.model, input_pattern, output_dir, batch_size=BATCH_SIZE.value,
        feature_fn=feature_fn, output_name=output_name,
        feature_dtype=config.data.patch_feature_dtype)
    statistics = None
  else:
    summary, statistics = feature_precompute.precompute_with_statistics(
        config, input_pattern, output_dir, batch_size=BATCH_SIZE.value, output_name=output_name)
  print(f"wrote {sum(s['records'] for s in summary.values())} records with patch_features "
        f"[64, {config.model.feature_dim}] ({config.data.patch_feature_dtype}) in {len(summary)} "
        f"shards to {output_dir}")
  if statistics is not None:
    print(f"patch feature statistics of {statistics.num_images} training images -> "
          f"{statistics.source}")


if __name__ == "__main__":
  app.run(main)
