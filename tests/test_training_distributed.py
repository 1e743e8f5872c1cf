"""Distribution: MirroredStrategy on 2 logical CPUs == one device; two-process multi-worker run.

Both run in subprocesses: logical devices must be configured before TensorFlow initializes its
devices, and each multi-worker task is its own process.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_keras
    from fashionbert_tf.configs import experiment as experiment_config
    from fashionbert_tf.training import pretrain, synthetic

    mode, scope = sys.argv[1], sys.argv[2]
    examples = synthetic.synthetic_examples(16, vocab_size=40, feature_dim=8, seed=3)
    examples["masked_lm_weights"][::3, 1] = 0.0      # uneven masked counts across replicas
    examples["masked_patch_weights"][1::4, :2] = 0.0
    config = experiment_config.load_config(None, [{
        "model": dict(synthetic.tiny_model_overrides(), num_layers=1),
        "train": {"loss_weighting": mode, "grad_norm_scope": scope, "learning_rate": 1e-3,
                  "warmup_steps": 0, "train_steps": 100, "global_batch_size": 8,
                  "gradient_clip_norm": 1.0}}])
    runs = {}
    reference_weights = None
    for name in ("one_device", "mirrored"):
      strategy = (tf.distribute.OneDeviceStrategy("/cpu:0") if name == "one_device" else
                  tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
      tf_keras.utils.set_random_seed(0)
      model, optimizer, pretrainer, step = pretrain.build_training_objects(config, strategy)
      if reference_weights is None:
        reference_weights = model.get_weights()
      else:
        model.set_weights(reference_weights)
      dataset = tf.data.Dataset.from_tensor_slices(examples).batch(8)
      iterator = iter(strategy.experimental_distribute_dataset(dataset))
      train_function = pretrainer.make_train_function()
      logs = []
      for _ in range(2):
        logs.append({k: float(v) for k, v in train_function(iterator).items()})
        pretrainer.reset_metrics()
      runs[name] = dict(replicas=strategy.num_replicas_in_sync, logs=logs,
                        weights=[w.tolist() for w in model.get_weights()[:6]])
    print("RESULT" + json.dumps(runs))
""")


def run_python(script, *args, env=None, timeout=300):
  completed = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                             text=True, env=env, timeout=timeout)
  assert completed.returncode == 0, completed.stderr[-4000:]
  return completed.stdout


@pytest.mark.parametrize("mode,scope", [("grad_norm", "shared_variables")])
def test_mirrored_on_two_logical_cpus_equals_one_device(mode, scope):
  # grad_norm over the shared variables exercises every all-reduce of the step: the global
  # denominators, the losses, the per-task gradients the weights come from.
  stdout = run_python(MIRRORED_SCRIPT, mode, scope)
  runs = json.loads(stdout.split("RESULT", 1)[1])
  import numpy as np  # pylint: disable=g-import-not-at-top
  assert runs["one_device"]["replicas"] == 1 and runs["mirrored"]["replicas"] == 2
  for one, mirrored in zip(runs["one_device"]["logs"], runs["mirrored"]["logs"]):
    assert one.keys() == mirrored.keys()
    for key in one:
      np.testing.assert_allclose(mirrored[key], one[key], rtol=2e-5, atol=1e-6,
                                 err_msg=f"{mode}: {key}")
  # Same update: the weights after two steps agree.
  for one, mirrored in zip(runs["one_device"]["weights"], runs["mirrored"]["weights"]):
    np.testing.assert_allclose(mirrored, one, rtol=1e-4, atol=1e-6, err_msg=mode)


MULTI_WORKER_SCRIPT = textwrap.dedent("""
    import json, sys
    from absl import logging
    logging.set_verbosity(logging.INFO)
    from fashionbert_tf.configs import experiment as experiment_config
    from fashionbert_tf.training import pretrain, synthetic
    config = experiment_config.load_config(None, [{
        "model": dict(synthetic.tiny_model_overrides(), num_layers=1),
        "train": {"strategy": "multi_worker", "model_dir": sys.argv[1], "train_steps": 3,
                  "global_batch_size": 8, "warmup_steps": 0, "checkpoint_every_steps": 3,
                  "log_every_steps": 1, "validation_every_steps": 3, "validation_steps": 1,
                  "loss_weighting": "grad_norm", "grad_norm_scope": "sequence_output"}}])
    data = dict(vocab_size=40, feature_dim=8, num_examples=32)
    # Factories: MultiWorkerMirroredStrategy must exist before any TensorFlow op runs.
    summary = pretrain.run_pretraining(
        config, lambda: synthetic.synthetic_dataset(8, **data),
        lambda: synthetic.synthetic_dataset(8, repeat=False, seed=1, **data))
    print("RESULT" + json.dumps({"final_step": summary["final_step"],
                                 "loss": summary["train_logs"]["loss"]}))
""")


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_two_process_multi_worker_run_completes(tmp_path):
  workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
  model_dir = str(tmp_path / "run")
  processes = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
               CUDA_VISIBLE_DEVICES="")
    processes.append(subprocess.Popen([sys.executable, "-c", MULTI_WORKER_SCRIPT, model_dir],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env))
  outputs = []
  try:
    for process in processes:
      stdout, stderr = process.communicate(timeout=240)
      assert process.returncode == 0, stderr[-4000:]
      outputs.append(json.loads(stdout.split("RESULT", 1)[1]))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  assert [output["final_step"] for output in outputs] == [3, 3]
  # Both workers report the same (all-reduced) loss; only the chief keeps the run directory.
  assert outputs[0]["loss"] == pytest.approx(outputs[1]["loss"], rel=1e-6)
  assert os.path.exists(os.path.join(model_dir, "ckpt-3.index"))
  assert os.path.exists(os.path.join(model_dir, "params.yaml"))
  assert not os.path.exists(os.path.join(model_dir, "workers_tmp", "worker_1"))
