r"""Start-up of pre-training on a Fashion-Gen-sized set: process start to the first step, with the
negatives index (`<split>.negatives_index.json`, written by prepare-data) and without it (every
shard scanned first, as before the index existed).

  python tools/benchmark_startup.py [--num_records 260480] [--work_dir /tmp/fashionbert_startup]

Writes (once) `--num_records` small training records in Fashion-Gen's TFRecord schema, without
images (empty image bytes; 64 x 1 precomputed patch features), `--records_per_product` records per
product, then times two fresh processes that run `run_pretraining` for one step of a tiny model:
one after deleting the index (scan) and one with the index in place. Also times the sampler's part
alone in this process. Prints a table with the settings and writes it as JSON with --output.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

from absl import app
from absl import flags

NUM_RECORDS = flags.DEFINE_integer("num_records", 260480, "training records (Fashion-Gen: 260,480)")
RECORDS_PER_PRODUCT = flags.DEFINE_float("records_per_product", 3.3,
                                         "poses per product (Fashion-Gen: ~3.3)")
NUM_SHARDS = flags.DEFINE_integer("num_shards", 64, "training shards")
WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/fashionbert_startup", "where the records go")
OUTPUT = flags.DEFINE_string("output", "", "optional JSON output file")

WORDS = ("red black white navy green grey beige long short sleeve cotton wool silk denim collar "
         "button zip pocket striped checked slim relaxed crew neck v-neck hooded cropped midi "
         "maxi leather suede stretch jersey knit pleated tapered wide leg logo print").split()
CATEGORIES = [(f"CATEGORY {c}", f"SUBCATEGORY {c}-{s}") for c in range(48) for s in range(3)]

RUN_ONE_STEP = textwrap.dedent("""
    import sys, time
    started = float(sys.argv[2])
    from absl import logging
    logging.set_verbosity(logging.INFO)   # the stages' times are in the captured log
    from fashionbert_tf.configs import experiment as experiment_config
    from fashionbert_tf.training import pretrain, synthetic
    config = experiment_config.load_config(None, [{
        "data": {"tfrecord_dir": sys.argv[1], "features_tfrecord_dir": sys.argv[1],
                 "num_shards": 1},
        "model": dict(synthetic.tiny_model_overrides(feature_dim=1, vocab_size=30522),
                      num_layers=1),
        "train": {"model_dir": sys.argv[3], "train_steps": 1, "global_batch_size": 8,
                  "warmup_steps": 0, "validation_steps": 0, "log_every_steps": 1}}])

    import tf_keras
    class Clock(tf_keras.callbacks.Callback):
      def on_train_batch_end(self, batch, logs=None):
        print(f"FIRST_STEP_AFTER {time.time() - started:.2f}", flush=True)

    pretrain.run_pretraining(config, extra_callbacks=[Clock()])
""")


def write_records(directory, num_records, records_per_product, num_shards):
  """Fashion-Gen-schema records without images, `num_shards` shards; returns the file pattern."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data import records  # pylint: disable=g-import-not-at-top
  pattern = records.split_file_pattern(directory, "train")
  done_marker = os.path.join(directory, f"written-{num_records}-{num_shards}")
  if os.path.exists(done_marker):
    return pattern
  shutil.rmtree(directory, ignore_errors=True)
  os.makedirs(directory)
  rng = np.random.default_rng(0)
  features = np.zeros([64, 1], np.float32)
  num_products = max(2, int(round(num_records / records_per_product)))
  descriptions = [" ".join(rng.choice(WORDS, size=rng.integers(12, 40)))
                  for _ in range(num_products)]
  groups = [CATEGORIES[i] for i in rng.integers(0, len(CATEGORIES), size=num_products)]
  product_of_record = np.sort(rng.integers(0, num_products, size=num_records))
  start = time.time()
  writers = [tf.io.TFRecordWriter(records.shard_path(directory, "train", i, num_shards))
             for i in range(num_shards)]
  for record_id, product in enumerate(product_of_record):
    category, subcategory = groups[product]
    record = dict(record_id=record_id, product_id=100000 + int(product),
                  description=descriptions[product], name="", category=category,
                  subcategory=subcategory, pose="id_gridfs_1")
    example = records.make_example(record, b"", patch_features=features)
    writers[record_id * num_shards // num_records].write(example.SerializeToString())
  for writer in writers:
    writer.close()
  print(f"wrote {num_records} records of {num_products} products in {num_shards} shards to "
        f"{directory} in {time.time() - start:.1f} s")
  open(done_marker, "w").close()
  return pattern


def time_process(data_dir, model_dir):
  shutil.rmtree(model_dir, ignore_errors=True)
  started = time.time()
  completed = subprocess.run([sys.executable, "-c", RUN_ONE_STEP, data_dir, str(started),
                              model_dir], capture_output=True, text=True, check=False)
  for line in completed.stdout.splitlines():
    if line.startswith("FIRST_STEP_AFTER"):
      return float(line.split()[1])
  raise RuntimeError(f"the one-step run failed:\n{completed.stderr[-3000:]}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from fashionbert_tf.data import negatives_index  # pylint: disable=g-import-not-at-top
  data_dir = os.path.join(WORK_DIR.value, "tfrecords")
  pattern = write_records(data_dir, NUM_RECORDS.value, RECORDS_PER_PRODUCT.value,
                          NUM_SHARDS.value)
  index_file = negatives_index.index_path(pattern)

  start = time.time()
  index = negatives_index.build_index(pattern)
  scan_seconds = time.time() - start
  negatives_index.write_index(index, index_file)
  start = time.time()
  _, how = negatives_index.load_or_build(pattern)
  load_seconds = time.time() - start
  assert how == "loaded", how

  model_dir = os.path.join(WORK_DIR.value, "run")
  os.remove(index_file)
  without_index = time_process(data_dir, model_dir)   # scans, then writes the index back
  assert os.path.exists(index_file)
  with_index = time_process(data_dir, model_dir)
  result = {
      "settings": {"num_records": NUM_RECORDS.value, "num_products": len(index["products"]),
                   "num_shards": NUM_SHARDS.value, "cpu_count": os.cpu_count(),
                   "model": "tiny (1 layer, hidden 32), batch 8, features 64 x 1"},
      "sampler_table_seconds": {"scan_shards": round(scan_seconds, 2),
                                "read_index": round(load_seconds, 2)},
      "process_start_to_first_step_seconds": {"without_index": round(without_index, 2),
                                              "with_index": round(with_index, 2)},
  }
  print(json.dumps(result["settings"]))
  print(f"{'':34}{'without index':>15}{'with index':>12}")
  print(f"{'sampler table (s)':34}{scan_seconds:>15.2f}{load_seconds:>12.2f}")
  print(f"{'process start -> first step (s)':34}{without_index:>15.2f}{with_index:>12.2f}")
  if OUTPUT.value:
    with open(OUTPUT.value, "w", encoding="utf-8") as handle:
      json.dump(result, handle, indent=2)


if __name__ == "__main__":
  app.run(main)
