"""Non-finite losses (`train.on_nonfinite`): a NaN batch never reaches the weights.

One batch's patch features are NaN: `stop` ends the run naming the step and writes no checkpoint
from it; `skip_batch` applies no update for that batch (weights and Adam moments unchanged, the step
count moves on) and counts it; under MirroredStrategy a NaN on one replica's share makes every
replica skip.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.training import nonfinite
from fashionbert_tf.training import pretrain
from fashionbert_tf.training import synthetic

from test_training_pretrain_run import DATA, scalar_tags, tiny_config

BATCH = 8
NAN_STEP = 5  # the 5th batch (rows 32..39) carries NaN patch features


def examples_with_nan_batch(num_batches=16,
                            nan_rows=slice((NAN_STEP - 1) * BATCH, NAN_STEP * BATCH)):
  examples = synthetic.synthetic_examples(num_batches * BATCH, vocab_size=DATA["vocab_size"],
                                          feature_dim=DATA["feature_dim"],
                                          num_products=DATA["num_products"], seed=5)
  examples[contract.FEATURES_KEY][nan_rows, 3, :] = np.nan
  return examples


def nan_dataset():
  return tf.data.Dataset.from_tensor_slices(examples_with_nan_batch()).batch(BATCH)


def test_stop_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  model_dir = str(tmp_path / "run")
  config = tiny_config(model_dir, train_steps=12, checkpoint_every_steps=2, validation_steps=0,
                       on_nonfinite="stop")
  with pytest.raises(nonfinite.NonFiniteLossError, match=f"step {NAN_STEP}:.*loss nan"):
    pretrain.run_pretraining(config, nan_dataset())
  latest = tf.train.latest_checkpoint(model_dir)
  assert latest.endswith(f"ckpt-{NAN_STEP - 1}")
  reader = tf.train.load_checkpoint(latest)
  for name in reader.get_variable_to_shape_map():
    value = reader.get_tensor(name)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
      assert np.all(np.isfinite(value)), name


def test_skip_batch_applies_no_update_and_counts_it(tmp_path):
  model_dir = str(tmp_path / "run")
  config = tiny_config(model_dir, train_steps=12, checkpoint_every_steps=100, validation_steps=0,
                       log_every_steps=1, on_nonfinite="skip_batch")
  summary = pretrain.run_pretraining(config, nan_dataset())
  assert summary["final_step"] == 12 and summary["skipped_batches"] == 1
  assert "skipped_batches" in scalar_tags(os.path.join(model_dir, "train"))
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 12
  for name in reader.get_variable_to_shape_map():
    value = reader.get_tensor(name)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
      assert np.all(np.isfinite(value)), name


def test_the_skipped_step_leaves_weights_and_moments_as_they_were(tmp_path):
  config = tiny_config(str(tmp_path / "run"), on_nonfinite="skip_batch")
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  model, optimizer, pretrainer, step = pretrain.build_training_objects(config, strategy)
  iterator = iter(strategy.experimental_distribute_dataset(nan_dataset()))
  train_function = pretrainer.make_train_function()
  for _ in range(NAN_STEP - 1):
    logs = train_function(iterator)
    assert float(logs["step_finite"]) == 1.0
  before = [v.numpy().copy() for v in model.weights + optimizer.variables()
            if v is not optimizer.iterations]
  logs = train_function(iterator)
  assert float(logs["step_finite"]) == 0.0 and np.isnan(float(logs["step_mpm_loss"]))
  after = [v.numpy() for v in model.weights + optimizer.variables()
           if v is not optimizer.iterations]
  for old, new in zip(before, after):
    np.testing.assert_array_equal(new, old)
  assert int(step.numpy()) == NAN_STEP
  logs = train_function(iterator)  # the next batch trains again
  assert float(logs["step_finite"]) == 1.0
  assert any(not np.array_equal(v.numpy(), old) for v, old in zip(model.trainable_weights,
                                                                  before))


MIRRORED_NAN_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[2])
    from test_training_nonfinite import BATCH, NAN_STEP, examples_with_nan_batch
    from test_training_pretrain_run import tiny_config
    from fashionbert_tf.training import pretrain
    # NaN only in the second replica's half of the NaN batch.
    start = (NAN_STEP - 1) * BATCH + BATCH // 2
    examples = examples_with_nan_batch(nan_rows=slice(start, start + BATCH // 2))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = tiny_config(sys.argv[1], on_nonfinite="skip_batch")
    model, optimizer, pretrainer, step = pretrain.build_training_objects(config, strategy)
    dataset = tf.data.Dataset.from_tensor_slices(examples).batch(BATCH)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    train_function = pretrainer.make_train_function()
    finite, changed = [], []
    for _ in range(NAN_STEP + 1):
      before = [np.concatenate([np.ravel(x) for x in strategy.experimental_local_results(v)])
                for v in model.trainable_weights]
      finite.append(float(train_function(iterator)["step_finite"]))
      after = [np.concatenate([np.ravel(x) for x in strategy.experimental_local_results(v)])
               for v in model.trainable_weights]
      changed.append(any(not np.array_equal(a, b) for a, b in zip(after, before)))
    replicas_equal = all(
        np.array_equal(*[np.asarray(x) for x in strategy.experimental_local_results(v)])
        for v in model.trainable_weights)
    all_finite = all(np.all(np.isfinite(v.numpy())) for v in model.trainable_weights)
    print("RESULT" + json.dumps(dict(finite=finite, changed=changed, step=int(step.numpy()),
                                     replicas_equal=replicas_equal, all_finite=all_finite)))
""")


def test_mirrored_replicas_all_skip_a_batch_nan_on_one_replica(tmp_path):
  completed = subprocess.run(
      [sys.executable, "-c", MIRRORED_NAN_SCRIPT, str(tmp_path / "run"), os.path.dirname(__file__)],
      capture_output=True, text=True, timeout=300)
  assert "RESULT" in completed.stdout, completed.stderr[-3000:]
  result = json.loads(completed.stdout.split("RESULT", 1)[1])
  expected = [1.0] * (NAN_STEP - 1) + [0.0, 1.0]
  assert result["finite"] == expected
  # (The first step's learning rate is 0: warm-up.) The steps around the NaN one update the
  # weights; the NaN step leaves them as they were, on both replicas.
  assert result["changed"][1:] == [value == 1.0 for value in expected[1:]]
  assert result["step"] == NAN_STEP + 1
  assert result["replicas_equal"] and result["all_finite"]


def test_on_nonfinite_is_validated(tmp_path):
  with pytest.raises(ValueError, match="on_nonfinite"):
    tiny_config(str(tmp_path / "run"), on_nonfinite="ignore").train.validate()
