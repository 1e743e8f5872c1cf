"""Examples/s through the full input pipeline (read, decode, pair, tokenize, mask, batch).

  python tools/benchmark_input_pipeline.py --config configs/toy.yaml [--batch_size 64]

Needs prepared TFRecords (`fashionbert demo` or `fashionbert prepare-data` first); with
`--params_override data.source=tfds` it times the `builder.as_dataset` reader instead. Iterates the
training dataset exactly as pretraining does and prints the rate with its settings and the
machine's load (the number is only meaningful on an otherwise idle machine).
"""

import os
import time

from absl import app
from absl import flags

from fashionbert_tf.cli import common_flags
from fashionbert_tf.data import pipeline

BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size (examples per batch).")
NUM_BATCHES = flags.DEFINE_integer("num_batches", 150, "Batches timed.")
WARMUP_BATCHES = flags.DEFINE_integer("warmup_batches", 20, "Batches read before timing.")
REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs (the best and all are printed).")


def main(argv):
  del argv
  config = common_flags.config_from_flags()
  data = config.data
  build_start = time.time()
  dataset = pipeline.build_pretraining_dataset(data, "train", BATCH_SIZE.value)
  build_seconds = time.time() - build_start
  iterator = iter(dataset)
  first_start = time.time()
  for _ in range(WARMUP_BATCHES.value):
    next(iterator)
  warmup_seconds = time.time() - first_start
  rates = []
  for _ in range(REPEATS.value):
    examples = 0
    start = time.time()
    for _ in range(NUM_BATCHES.value):
      examples += int(next(iterator)["tia_label"].shape[0])
    rates.append(examples / (time.time() - start))
  load = os.getloadavg()
  print("input pipeline benchmark (read, decode, pair, tokenize, mask, batch)")
  where = (f"{data.tfrecord_dir} ({data.image_format})" if data.source == "tfrecords" else
           f"TFDS fashion_gen/{data.tfds_config} in {data.tfds_data_dir or 'tfds/'} (as_dataset)")
  print(f"  data: {where}, batch_size {BATCH_SIZE.value}, "
        f"negative_ratio {data.negative_ratio}, max_text_length {data.max_text_length}, "
        f"P {data.max_predictions_per_seq}, shuffle_buffer {data.shuffle_buffer}, "
        f"pairing_chunk_size {data.pairing_chunk_size}")
  print(f"  machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f} / "
        f"{load[2]:.2f} (1 / 5 / 15 min, during the run)")
  print(f"  build {build_seconds:.1f} s, {WARMUP_BATCHES.value} warm-up batches "
        f"{warmup_seconds:.1f} s, {NUM_BATCHES.value} timed batches x {REPEATS.value}")
  print(f"  examples/s: best {max(rates):.0f}, runs {[round(r) for r in rates]}")


if __name__ == "__main__":
  app.run(main)
