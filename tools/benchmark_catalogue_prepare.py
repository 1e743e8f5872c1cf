"""prepare-data on a synthetic catalogue: rows/s and peak memory at several catalogue sizes.

  python tools/benchmark_catalogue_prepare.py --num_rows 5000,20000 --workers 2 \
      --work_dir /tmp/catalogue_bench

Writes `--num_distinct_images` photos once (200-2000 px a side, portrait, landscape and square,
JPEG / PNG / WebP in turn, smooth garment-like shapes so PNGs are of realistic size), then for
each size N a JSON Lines catalogue of N rows (N / 3 products of 1-5 images, titles, categories,
no split column: the seeded split) whose rows reuse those files in turn, and runs
`fashionbert prepare-data` on it in a child process with `data.prepare_workers = --workers`. The
files are read from the page cache after the first pass: the numbers are decode + resize + encode
+ write throughput, not disk reads.

Prints one JSON line per size: rows, seconds (the whole command; and the image pass alone, from its
log), rows/s, and the child's peak resident memory (`ru_maxrss` of the process, which includes
TensorFlow's ~0.6 GB import). Streaming means the peak must not grow with N. Meaningful only on an
otherwise idle machine.
"""

import json
import os
import re
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageDraw

NUM_ROWS = flags.DEFINE_list("num_rows", ["5000", "20000"], "Catalogue sizes (rows) to time.")
WORKERS = flags.DEFINE_integer("workers", 2, "data.prepare_workers of the timed prepare-data.")
NUM_DISTINCT_IMAGES = flags.DEFINE_integer(
    "num_distinct_images", 1500, "Photo files written (rows reuse them in turn).")
WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/catalogue_bench", "Where files go.")
IMAGE_FORMAT = flags.DEFINE_string("image_format", "jpeg", "data.image_format of the records.")

FORMATS = (("jpg", "JPEG", {"quality": 90}), ("png", "PNG", {}), ("webp", "WEBP", {"quality": 85}))
COLOURS = ("red", "navy", "black", "white", "green", "beige", "grey", "pink")
GARMENTS = ("shirt", "dress", "jacket", "sweater", "skirt", "trousers", "coat", "scarf")


def _photo(index, rng):
  """A garment-like photo: a light background, a coloured body with sleeves, some stripes."""
  long_side = int(rng.integers(200, 2001))
  short_side = int(long_side * rng.uniform(0.5, 1.0))
  width, height = ((short_side, long_side), (long_side, short_side),
                   (long_side, long_side))[index % 3]
  image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(225, 256, 3)))
  draw = ImageDraw.Draw(image)
  colour = tuple(int(v) for v in rng.integers(0, 256, 3))
  draw.rectangle([width * 0.3, height * 0.2, width * 0.7, height * 0.9], fill=colour)
  draw.polygon([(width * 0.3, height * 0.2), (width * 0.1, height * 0.5),
                (width * 0.2, height * 0.55), (width * 0.3, height * 0.35)], fill=colour)
  draw.polygon([(width * 0.7, height * 0.2), (width * 0.9, height * 0.5),
                (width * 0.8, height * 0.55), (width * 0.7, height * 0.35)], fill=colour)
  stripe = tuple(int(v) for v in rng.integers(0, 256, 3))
  for y in np.arange(height * 0.25, height * 0.9, max(height / 40, 2)):
    draw.line([(width * 0.3, y), (width * 0.7, y)], fill=stripe, width=max(height // 200, 1))
  return image


def write_photos(directory, count, seed=0):
  """`count` photo files in `directory` (kept between runs). Returns their names."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  names = []
  start = time.time()
  for index in range(count):
    suffix, pil_format, options = FORMATS[index % len(FORMATS)]
    name = f"photo_{index:05d}.{suffix}"
    path = os.path.join(directory, name)
    image = _photo(index, rng)   # drawn whether or not the file exists: the same rng stream
    if not os.path.exists(path):
      image.save(path + ".tmp", format=pil_format, **options)
      os.replace(path + ".tmp", path)
    names.append(name)
    if (index + 1) % 250 == 0:
      print(f"photos: {index + 1}/{count} ({time.time() - start:.0f} s)", file=sys.stderr)
  return names


def write_catalogue(path, num_rows, photo_names, seed=0):
  """A JSON Lines catalogue of `num_rows` rows over the photos (module docstring)."""
  rng = np.random.default_rng(seed)
  row = 0
  product = 0
  with open(path, "w", encoding="utf-8") as handle:
    while row < num_rows:
      poses = min(int(rng.integers(1, 6)), num_rows - row)
      colour, garment = COLOURS[product % len(COLOURS)], GARMENTS[(product // 8) % len(GARMENTS)]
      for _ in range(poses):
        handle.write(json.dumps({
            "image": os.path.join("photos", photo_names[row % len(photo_names)]),
            "text": f"{colour} {garment} in cotton, style {product}",
            "product_id": f"SKU-{product:06d}", "category": garment.upper(),
            "subcategory": f"{garment.upper()} {product % 5}"}) + "\n")
        row += 1
      product += 1
  return path


# Runs argv[1:] as its child and prints the child's peak RSS (ru_maxrss, kB on Linux) and CPU time:
# a fresh parent per size, so one size's peak is not another's (ru_maxrss of RUSAGE_CHILDREN is
# the largest over all children a process waited for).
_MEASURE = ("import json, resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
            "print('RUSAGE ' + json.dumps({'maxrss_kb': usage.ru_maxrss, "
            "'cpu_seconds': usage.ru_utime + usage.ru_stime}), file=sys.stderr)\n"
            "sys.exit(code)\n")


def run_prepare(work_dir, catalogue, num_rows, workers, image_format):
  """Runs prepare-data in a child process; returns the measurements."""
  out = os.path.join(work_dir, f"out_{num_rows}")
  overrides = ",".join([
      "data.source=catalogue", f"data.catalogue_file={catalogue}",
      f"data.tfrecord_dir={out}/tfrecords", f"data.candidates_file={out}/candidates.json",
      f"data.prepare_workers={workers}", f"data.image_format={image_format}",
      "data.num_shards=4", "data.num_text_queries=100", "data.num_image_queries=100",
      "data.candidate_fallback=fill"])
  start = time.time()
  result = subprocess.run(
      [sys.executable, "-c", _MEASURE, sys.executable, "-m", "fashionbert_tf.cli.main",
       "prepare-data", "--config=", f"--params_override={overrides}"],
      capture_output=True, text=True, check=False)
  seconds = time.time() - start
  if result.returncode != 0:
    raise RuntimeError(f"prepare-data failed:\n{result.stderr[-3000:]}")
  usage = json.loads(re.search(r"^RUSAGE (.*)$", result.stderr, re.M).group(1))
  match = re.search(r"catalogue images: (\d+) records in ([\d.]+) s", result.stderr)
  image_seconds = float(match.group(2)) if match else float("nan")
  with open(os.path.join(out, "tfrecords", "dataset_info.json"), encoding="utf-8") as handle:
    info = json.load(handle)
  return {
      "rows": num_rows, "workers": workers, "image_format": image_format,
      "records": sum(split["num_records"] for split in info["splits"].values()),
      "skipped": info["catalogue"]["skipped_rows"]["total"],
      "seconds_total": round(seconds, 1), "seconds_images": image_seconds,
      "rows_per_second_images": round(num_rows / image_seconds, 1),
      "rows_per_second_total": round(num_rows / seconds, 1),
      "peak_rss_mb": round(usage["maxrss_kb"] / 1024.0, 1),
      "cpu_seconds": round(usage["cpu_seconds"], 1),
      "load_average": os.getloadavg(),
  }


def main(argv):
  del argv
  work_dir = WORK_DIR.value
  photos = write_photos(os.path.join(work_dir, "photos"), NUM_DISTINCT_IMAGES.value)
  sizes = sorted({int(n) for n in NUM_ROWS.value})
  for num_rows in sizes:
    catalogue = write_catalogue(os.path.join(work_dir, f"catalogue_{num_rows}.jsonl"),
                                num_rows, photos)
    print(json.dumps(run_prepare(work_dir, catalogue, num_rows, WORKERS.value,
                                 IMAGE_FORMAT.value)), flush=True)


if __name__ == "__main__":
  app.run(main)
