"""Faults a long pre-training run meets: SIGTERM (SIGINT: test_search_finetune_faults.py and
test_training_preemption.py), a checkpoint that no longer reads, a shard corrupted after the run
first read it."""

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import textwrap

import pytest
import tensorflow as tf

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import records
from fashionbert_tf.training import pretrain
from fashionbert_tf.training import synthetic

from test_training_pretrain_run import (datasets, latest_step, signal_after_checkpoint, start_script,
                                        tiny_config)

SIGNALLED_RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from test_training_pretrain_run import datasets, tiny_config
    from fashionbert_tf.training import pretrain
    summary = pretrain.run_pretraining(tiny_config(
        sys.argv[1], train_steps=100000, checkpoint_every_steps=5, validation_steps=0,
        log_every_steps=1), *datasets())
    print("INTERRUPTED_BY", summary["interrupted_by"], summary["final_step"])
""")


def test_sigterm_saves_the_current_step_and_resume_starts_there(tmp_path):
  # A scheduler's preemption; search fine-tuning's test sends SIGINT through the same trainer.
  signal_number = signal.SIGTERM
  model_dir = str(tmp_path / "run")
  process = start_script(SIGNALLED_RUN, model_dir, stdout=subprocess.PIPE)
  stopped_at, checkpoint, stdout = signal_after_checkpoint(process, model_dir, 5, signal_number)
  name = signal.Signals(signal_number).name
  assert stopped_at >= 5
  assert f"INTERRUPTED_BY {name} {stopped_at}" in stdout
  assert checkpoint.endswith(f"ckpt-{stopped_at}")
  assert latest_step(model_dir) == stopped_at
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == stopped_at

  summary = pretrain.run_pretraining(tiny_config(model_dir, train_steps=stopped_at + 2,
                                                 validation_steps=0), *datasets())
  assert summary["first_step"] == stopped_at and summary["final_step"] == stopped_at + 2


def test_an_unreadable_latest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
  model_dir = str(tmp_path / "run")
  pretrain.run_pretraining(tiny_config(model_dir, train_steps=12, checkpoint_every_steps=4,
                                       validation_steps=0), *datasets())
  assert latest_step(model_dir) == 12
  # ckpt-12 cut short after it became the latest (a copy that died, a full disk).
  data_file, = [path for path in os.listdir(model_dir) if path.startswith("ckpt-12.data")]
  path = os.path.join(model_dir, data_file)
  with open(path, "rb") as handle:
    content = handle.read()
  with open(path, "wb") as handle:
    handle.write(content[:len(content) // 3])
  summary = pretrain.run_pretraining(tiny_config(model_dir, train_steps=14, validation_steps=0),
                                     *datasets())
  assert summary["first_step"] == 8 and summary["final_step"] == 14
  assert "ckpt-12 cannot be restored" in caplog.text
  assert "resuming from" in caplog.text and "skipped: ckpt-12" in caplog.text


def _corrupt_in_place(shard):
  """Flips 16 bytes in the middle of `shard`, keeping its size and modification time."""
  stat = os.stat(shard)
  with open(shard, "r+b") as handle:
    handle.seek(stat.st_size // 2)
    chunk = handle.read(16)
    handle.seek(stat.st_size // 2)
    handle.write(bytes(b ^ 0xFF for b in chunk))
  os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same name, size and time


def _toy_run_config(toy_data_config, tiny_vocab_file, tmp_path, **data_overrides):
  data_dir = str(tmp_path / "tfrecords")
  shutil.copytree(toy_data_config.tfrecord_dir, data_dir)
  data = dataclasses.replace(toy_data_config, tfrecord_dir=data_dir,
                             candidates_file=os.path.join(data_dir, "candidates.json"),
                             **data_overrides)
  with open(tiny_vocab_file, encoding="utf-8") as handle:
    vocab_size = len(handle.read().split())
  model = dict(synthetic.tiny_model_overrides(feature_dim=8, vocab_size=vocab_size),
               num_layers=1, use_precomputed_features=False)
  train = dict(train_steps=3, global_batch_size=4, warmup_steps=1, learning_rate=1e-3,
               checkpoint_every_steps=100, validation_steps=0, log_every_steps=1,
               loss_weighting="fixed", model_dir=str(tmp_path / "a"))
  config = experiment_config.load_config(None, [
      {"data": data.as_dict(), "model": model, "train": train}])
  shard = records.list_record_files(records.split_file_pattern(data_dir, "train"))[-1]
  return config, shard


def test_skip_corrupt_records_counts_the_skipped_rest_of_the_file(toy_data_config,
                                                                  tiny_vocab_file, tmp_path):
  config, shard = _toy_run_config(toy_data_config, tiny_vocab_file, tmp_path,
                                  skip_corrupt_records=True)
  num_records = sum(1 for _ in tf.data.TFRecordDataset(shard))
  _corrupt_in_place(shard)   # the index prepare-data wrote still says num_records
  readable = records._count_readable(shard)  # pylint: disable=protected-access
  assert 0 < readable < num_records
  # Enough steps for two passes over the 24 toy products' records (x2 pairs each).
  config.train.train_steps = 40
  config.train.log_every_steps = 5
  summary = pretrain.run_pretraining(config)
  assert summary["final_step"] == 40
  skipped = summary["skipped_corrupt_records"]
  assert list(skipped) == [shard]
  lost = num_records - readable
  assert skipped[shard] >= lost and skipped[shard] % lost == 0   # once per pass over the file


def test_a_shard_corrupted_after_the_first_read_is_named(toy_data_config, tiny_vocab_file,
                                                         tmp_path):
  config, shard = _toy_run_config(toy_data_config, tiny_vocab_file, tmp_path)
  pretrain.run_pretraining(config)  # reads the shards (negatives table, then batches)
  _corrupt_in_place(shard)

  config.train.model_dir = str(tmp_path / "b")
  config.train.train_steps = 200
  with pytest.raises(records.RecordFileError) as raised:
    pretrain.run_pretraining(config)
  message = str(raised.value)
  assert shard in message and "cannot be read" in message and "training step" in message
  assert re.search(r"record (\d+) \(0-based\)", message)
