"""`fashionbert demo`: the whole job on the embedded toy Fashion-Gen data, offline.

  fashionbert demo [--config configs/toy.yaml] [--params_override ...]

Steps (each a small function taking the `ExperimentConfig` and the shared `state` dict, run in
order by `main`; later stages append theirs to `STEPS`):
  1. generate_toy_data   the toy HDF5 files, if missing (tools/make_toy_fashion_gen.py does the same;
                         with data.source=tfds the fashion_gen builder's toy config makes its own)
  2. prepare_data        HDF5 -> TFRecords (or the TFDS dataset, data.source=tfds) + retrieval
                         candidate sets (skipped when up to date)
  3. precompute_features  with model.use_precomputed_features: the backbone runs once over every
                         image (tools/precompute_patch_features.py does the same), skipped when up
                         to date; then the training images' patch-feature statistics
                         (model.patch_feature_normalization: standardize)
  4. summarize_batches   a few pretraining batches: shapes, masking counts, positives/negatives
  5. train_mlm_head      with model.mlm_head_training_steps: an MLM head for an encoder checkpoint
                         that has none, encoder frozen, text only (training/mlm_head.py); once
  6. pretrain            `fashionbert pretrain` with the config (resumes a finished or killed run)
  7. evaluate            `fashionbert evaluate` on the latest checkpoint: prints the Table 1 layout
  8. write_figures       Figure 4 (w_i and TIA accuracy over steps) and the retrieval gallery PNGs
"""

import os
import time

from absl import flags
from absl import logging
import numpy as np

from fashionbert_tf.cli import common_flags
from fashionbert_tf.data import pipeline
from fashionbert_tf.data import prepare
from fashionbert_tf.data import records
from fashionbert_tf.data.toy import fashion_gen
from fashionbert_tf.evaluation import evaluate as evaluate_lib
from fashionbert_tf.evaluation import gallery
from fashionbert_tf.modeling import feature_precompute
from fashionbert_tf.modeling import feature_statistics
from fashionbert_tf.training import loss_weight_figure
from fashionbert_tf.training import mlm_head
from fashionbert_tf.training import preemption
from fashionbert_tf.training import pretrain as pretrain_lib

DEMO_BATCHES = flags.DEFINE_integer("demo_batches", 3, "Pipeline batches to summarize.")
REPREPARE = flags.DEFINE_bool("reprepare", False, "Run prepare-data even when up to date.")


def generate_toy_data(config, state):
  """Writes the toy HDF5 files named by data.train_hdf5 / data.validation_hdf5 when missing."""
  data = config.data
  if data.source == "tfds" and data.tfds_config == "toy":
    logging.info("data.source=tfds: the fashion_gen builder's toy config generates its own HDF5")
    return
  paths = (data.train_hdf5, data.validation_hdf5)
  if all(os.path.exists(path) for path in paths):
    logging.info("toy data present: %s, %s", *paths)
    return
  for path in paths:
    if not os.path.exists(path) and "toy" not in os.path.basename(path):
      raise FileNotFoundError(
          f"{path} is missing and is not a toy-data path; the demo only generates toy data "
          "(see data/README.md for real Fashion-Gen)")
  start = time.time()
  written = fashion_gen.make_toy_fashiongen(
      data.train_hdf5, data.validation_hdf5, num_train_products=data.toy_num_train_products,
      num_validation_products=data.toy_num_validation_products, seed=data.toy_seed,
      num_empty_descriptions=data.toy_num_empty_descriptions)
  logging.info("toy Fashion-Gen generated in %.1f s: %s", time.time() - start,
               {split: rows for split, (_, rows) in written.items()})
  state["generated"] = True


def prepare_data(config, state):
  """Runs prepare-data unless its output is newer than both HDF5 files."""
  data = config.data
  info_path = os.path.join(data.tfrecord_dir, prepare.DATASET_INFO_FILE)
  if data.source == "tfds":
    # TFDS versions its output; prepare-data's summary is current when it names this build.
    # Lazy: importing tensorflow_datasets adds ~10% to TensorFlow's own import time (python
    # -X importtime); only data.source=tfds needs it.
    from fashionbert_tf.data.sources import fashion_gen_tfds  # pylint: disable=g-import-not-at-top
    info = prepare.load_dataset_info(data.tfrecord_dir) or {}
    builder = fashion_gen_tfds.get_builder(data)
    up_to_date = (not REPREPARE.value and builder.is_prepared() and
                  info.get("source") == "tfds" and
                  info.get("tfds_config") == builder.builder_config.name and
                  info.get("tfds_data_dir") == fashion_gen_tfds.data_dir(data))
  else:
    up_to_date = (os.path.exists(info_path) and not REPREPARE.value and
                  all(os.path.getmtime(info_path) > os.path.getmtime(p)
                      for p in (data.train_hdf5, data.validation_hdf5)))
  if up_to_date:
    where = (data.tfrecord_dir if data.source == "tfrecords" else
             fashion_gen_tfds.data_dir(data))
    logging.info("prepared data up to date (%s; use --reprepare to rebuild)", where)
    state["dataset_info"] = prepare.load_dataset_info(data.tfrecord_dir)
    return
  state["dataset_info"] = prepare.prepare_dataset(data)


def precompute_features(config, state):
  """Shard copies with precomputed patch features (when configured) and the feature statistics."""
  data = config.data
  if config.model.use_precomputed_features:
    source_pattern = os.path.join(data.tfrecord_dir, "*.tfrecord")
    output_name = None
    if data.source == "tfds":   # copies of TFDS's shards, named as feature mode reads them
      # Lazy: importing tensorflow_datasets adds ~10% to TensorFlow's own import time (python
      # -X importtime); only data.source=tfds needs it.
      from fashionbert_tf.data.sources import fashion_gen_tfds  # pylint: disable=g-import-not-at-top
      source_pattern = fashion_gen_tfds.feature_source_pattern(data)
      output_name = fashion_gen_tfds.feature_copy_name
    output_dir = pipeline.features_output_dir(data)
    info_path = os.path.join(data.tfrecord_dir, prepare.DATASET_INFO_FILE)
    sources = records.list_record_files(source_pattern)
    outputs = [os.path.join(output_dir, (output_name or os.path.basename)(path))
               for path in sources]
    up_to_date = all(os.path.exists(path) and os.path.getmtime(path) > os.path.getmtime(info_path)
                     for path in outputs)
    if up_to_date:
      logging.info("precomputed patch features up to date in %s", output_dir)
    else:
      feature_precompute.precompute_with_statistics(config, source_pattern, output_dir,
                                                    output_name=output_name)
  if config.model.patch_feature_normalization == "standardize":
    state["feature_statistics"] = feature_statistics.ensure_statistics(config)


def summarize_batches(config, state):
  """Prints shapes and masking / pairing counts of a few training batches."""
  dataset = pipeline.build_pretraining_dataset(
      config.data, "train", config.train.global_batch_size,
      image_mode=not config.model.use_precomputed_features)
  totals = {"examples": 0, "positives": 0, "text_tokens": 0, "masked_pieces": 0,
            "masked_patches": 0}
  start = time.time()
  for index, batch in enumerate(dataset.take(DEMO_BATCHES.value)):
    batch = {key: value.numpy() for key, value in batch.items()}
    labels = batch["tia_label"]
    text_tokens = int(batch["input_mask"].sum()) - 2 * len(labels)
    masked_pieces = int(batch["masked_lm_weights"].sum())
    masked_patches = int(batch["masked_patch_weights"].sum())
    print(f"batch {index}: " + ", ".join(
        f"{key} {value.dtype.name}{list(value.shape)}" for key, value in sorted(batch.items())))
    print(f"  positives {int(labels.sum())}, negatives {int((1 - labels).sum())}; longest text "
          f"{batch['input_word_ids'].shape[1]} (shortest {int(batch['input_mask'].sum(1).min())});"
          f" masked WordPieces {masked_pieces} of {text_tokens} "
          f"({100.0 * masked_pieces / max(text_tokens, 1):.1f}%); masked patches "
          f"{masked_patches} of {64 * len(labels)} ({100.0 * masked_patches / (64 * len(labels)):.1f}%)")
    totals["examples"] += len(labels)
    totals["positives"] += int(labels.sum())
    totals["text_tokens"] += text_tokens
    totals["masked_pieces"] += masked_pieces
    totals["masked_patches"] += masked_patches
  print(f"{totals['examples']} examples in {time.time() - start:.1f} s: "
        f"{totals['positives']} positive / {totals['examples'] - totals['positives']} negative; "
        f"{100.0 * totals['masked_pieces'] / max(totals['text_tokens'], 1):.1f}% of WordPieces "
        f"and {100.0 * totals['masked_patches'] / max(64 * totals['examples'], 1):.1f}% of "
        "patches masked")
  state["batch_summary"] = totals


def train_mlm_head(config, state):
  """Trains the encoder checkpoint's missing MLM head once (model.mlm_head_training_steps)."""
  state["encoder_checkpoint"] = mlm_head.ensure_mlm_head(config)


def pretrain(config, state):
  """Pre-trains (or resumes) in train.model_dir; a complete run is not trained again."""
  summary = pretrain_lib.run_pretraining(config)
  preemption.exit_if_interrupted(summary, "fashionbert demo")
  logs = summary["train_logs"]
  print(f"pretraining: steps {summary['first_step']} -> {summary['final_step']} in "
        f"{summary['elapsed_seconds']:.0f} s ({summary['examples_per_second']:.1f} examples/s); "
        + ", ".join(f"{name} {logs[name]:.4f}" for name in sorted(logs)
                    if name.endswith("loss") or name.startswith("weight_")))
  state["pretrain"] = summary


def evaluate(config, state):
  """Scores TIA accuracy and Rank@K both directions on the latest checkpoint; prints the table."""
  state["evaluation"] = evaluate_lib.run_evaluation(config)


def write_figures(config, state):
  """Figure 4 (loss weights w_i and TIA accuracy over steps) and the retrieval gallery, as PNGs."""
  state["figures"] = [loss_weight_figure.write_loss_weight_figure(config.train.model_dir),
                      gallery.write_evaluation_gallery(config)]
  for path in state["figures"]:
    logging.info("figure written: %s (also in TensorBoard's Images tab)", path)


STEPS = [generate_toy_data, prepare_data, precompute_features, summarize_batches, train_mlm_head,
         pretrain, evaluate, write_figures]


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config = common_flags.config_from_flags()
  np.set_printoptions(linewidth=120)
  state = {}
  seconds = {}
  for step in STEPS:
    start = time.time()
    logging.info("demo step %s ...", step.__name__)
    step(config, state)
    seconds[step.__name__] = time.time() - start
    logging.info("demo step %s done in %.1f s", step.__name__, seconds[step.__name__])
  print("\ndemo wall time per step: " + ", ".join(
      f"{name} {value:.0f} s" for name, value in seconds.items()) +
        f"; total {sum(seconds.values()) / 60:.1f} min", flush=True)
