"""Whether this machine multiplies bfloat16 natively, and the training precision "auto" picks.

Mixed-bfloat16 training pays only where the hardware multiplies bfloat16: CPUs with AMX
(`amx_bf16`) or AVX-512 BF16 (`avx512_bf16`), where TensorFlow runs the matmuls through oneDNN,
and GPUs of compute capability 8.0 or newer. Elsewhere TensorFlow falls back to Eigen's generic
bfloat16 kernels: on a 2-core AMD EPYC with AVX2 only, the demo's train step (MiniLM-L6, batch 32)
took more than 45 s under mixed_bfloat16 against 2.8 s in float32 (docs/benchmarks/README.md).

`train.mixed_precision: auto` is "mixed_bfloat16" on such hardware and "float32" elsewhere. An
explicit "mixed_bfloat16" is kept as given, with a warning where it is emulated. (Inference is not
affected: the fused bfloat16 scoring graph, `modeling/fused_inference.py`, scored 1.45x float32's
pairs/s on that same AVX2 CPU.)
"""

import functools

from absl import logging
import tensorflow as tf

AUTO = "auto"
CPU_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")
_said = set()   # (option, message) pairs already logged: once per process each


def cpu_flags(cpuinfo_path="/proc/cpuinfo"):
  """The first processor's feature flags from `cpuinfo_path` (Linux); empty where it is missing."""
  try:
    with open(cpuinfo_path, encoding="utf-8", errors="replace") as handle:
      for line in handle:
        if line.startswith("flags"):
          return frozenset(line.partition(":")[2].split())
  except OSError:
    pass
  return frozenset()


def _gpus_multiply_bfloat16(gpus):
  for gpu in gpus:
    capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
    if not capability or capability < (8, 0):
      return False
  return True


@functools.lru_cache(maxsize=None)
def has_native_bfloat16():
  """(True / False, why): the devices TensorFlow computes on here multiply bfloat16 natively.

  With GPUs: all of them of compute capability >= 8.0. Without: the CPU has one of
  `CPU_BFLOAT16_FLAGS`.
  """
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    if _gpus_multiply_bfloat16(gpus):
      return True, "GPUs of compute capability >= 8.0"
    return False, "a GPU older than compute capability 8.0"
  found = sorted(cpu_flags().intersection(CPU_BFLOAT16_FLAGS))
  if found:
    return True, f"the CPU has {' / '.join(found)}"
  return False, "the CPU has neither AMX nor AVX-512 BF16"


def resolve(precision, option="train.mixed_precision"):
  """`precision` with "auto" replaced: "mixed_bfloat16" with native bfloat16, else "float32".

  Logs the choice for "auto", and warns when `precision` is "mixed_bfloat16" on hardware that
  only emulates it. `option` names the config key in the messages.
  """
  native, why = has_native_bfloat16()
  if precision == AUTO:
    chosen = "mixed_bfloat16" if native else "float32"
    _say(logging.info, option, f"{option} = auto: {chosen} ({why})")
    return chosen
  if precision == "mixed_bfloat16" and not native:
    _say(logging.warning, option,
         f"{option} = {precision}, but {why}: bfloat16 is emulated here and runs many times "
         f"slower than float32; {option} = auto picks float32 on this machine")
  return precision


def _say(log, option, message):
  if (option, message) not in _said:
    _said.add((option, message))
    log(message)
