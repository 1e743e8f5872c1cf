"""train.mixed_precision "auto": mixed_bfloat16 only where the hardware multiplies bfloat16
natively (training/native_bfloat16.py), float32 elsewhere; an explicit mixed_bfloat16 on
emulating hardware is kept and warned about."""

from absl import logging
import pytest
import tf_keras

from fashionbert_tf.configs import train as train_config_lib
from fashionbert_tf.training import native_bfloat16
from fashionbert_tf.training import strategies

XEON_FLAGS = "fpu vme sse4_2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
EPYC_AVX2_FLAGS = "fpu vme sse4_2 avx avx2 fma sse4a"


def _cpuinfo(tmp_path, flags):
  path = tmp_path / "cpuinfo"
  path.write_text(f"processor\t: 0\nmodel name\t: some cpu\nflags\t\t: {flags}\n\n"
                  f"processor\t: 1\nflags\t\t: {flags}\n", encoding="utf-8")
  return str(path)


def test_cpu_flags_reads_the_first_processors_flags(tmp_path):
  flags = native_bfloat16.cpu_flags(_cpuinfo(tmp_path, XEON_FLAGS))
  assert {"amx_bf16", "avx512_bf16", "avx2"} <= flags
  assert "processor" not in flags and "some" not in flags
  assert not native_bfloat16.cpu_flags(_cpuinfo(tmp_path, EPYC_AVX2_FLAGS)) & set(
      native_bfloat16.CPU_BFLOAT16_FLAGS)
  assert native_bfloat16.cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bfloat16_exactly_where_it_is_native(monkeypatch, native):
  monkeypatch.setattr(native_bfloat16, "has_native_bfloat16", lambda: (native, "test hardware"))
  chosen = native_bfloat16.resolve("auto", "train.mixed_precision")
  assert chosen == ("mixed_bfloat16" if native else "float32")
  for explicit in ("float32", "mixed_float16", "mixed_bfloat16"):
    assert native_bfloat16.resolve(explicit, "train.mixed_precision") == explicit


def test_explicit_bfloat16_on_emulating_hardware_warns_once(monkeypatch):
  monkeypatch.setattr(native_bfloat16, "has_native_bfloat16",
                      lambda: (False, "the CPU has neither AMX nor AVX-512 BF16"))
  monkeypatch.setattr(native_bfloat16, "_said", set())
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda message, *args: warnings.append(message % args))
  for _ in range(3):
    native_bfloat16.resolve("mixed_bfloat16", "train.mixed_precision")
  native_bfloat16.resolve("float32", "train.mixed_precision")
  assert len(warnings) == 1
  assert "train.mixed_precision = mixed_bfloat16" in warnings[0]
  assert "neither AMX nor AVX-512 BF16" in warnings[0] and "auto" in warnings[0]


def test_this_machine_gets_a_policy_that_matches_its_detection():
  train_config = train_config_lib.TrainConfig(mixed_precision="auto")
  train_config.validate()
  native, why = native_bfloat16.has_native_bfloat16()
  assert why
  try:
    policy = strategies.set_precision_policy(train_config)
    assert policy == ("mixed_bfloat16" if native else "float32")
    assert tf_keras.mixed_precision.global_policy().name == policy
  finally:
    tf_keras.mixed_precision.set_global_policy("float32")


def test_an_unknown_precision_names_the_option_and_the_choices():
  with pytest.raises(ValueError, match=r"train.mixed_precision = 'bf16'.*auto"):
    strategies.set_precision_policy(train_config_lib.TrainConfig(mixed_precision="bf16"))
  with pytest.raises(ValueError, match="train.mixed_precision"):
    train_config_lib.TrainConfig(mixed_precision="bf16").validate()
