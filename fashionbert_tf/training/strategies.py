"""Distribution strategy, mixed precision and XLA for pre-training (`train.strategy`, ...).

  one_device    `tf.distribute.OneDeviceStrategy` on the first GPU, else the CPU.
  mirrored      `tf.distribute.MirroredStrategy` over `train.mirrored_devices`, or all GPUs, or
                (without GPUs) all logical CPU devices. Paper 3.1: 8 GPUs, 64 pairs per batch.
  multi_worker  `tf.distribute.MultiWorkerMirroredStrategy`, cluster from the `TF_CONFIG`
                environment variable ({"cluster": {"worker": [...]}, "task": {...}}).

`train.global_batch_size` is the batch over all replicas; the pipeline produces global batches
and `strategy.experimental_distribute_dataset` splits them.

Mixed precision (`train.mixed_precision`): "mixed_float16" (dynamic loss scaling through
`LossScaleOptimizer`), "mixed_bfloat16", or "auto" (mixed_bfloat16 where the hardware multiplies
bfloat16 natively, else float32: `native_bfloat16.py`); the global Keras policy must be set before
the model is built. XLA (`train.jit_compile`) compiles the train step
(`Model.compile(jit_compile=True)`).
"""

import json
import os

from absl import logging
import tensorflow as tf
import tf_keras

from fashionbert_tf.configs import train as train_config_lib
from fashionbert_tf.training import native_bfloat16


def build_strategy(train_config):
  """The `tf.distribute.Strategy` named by `train_config.strategy`.

  Raises:
    ValueError: unknown strategy, or `multi_worker` without a usable TF_CONFIG.
  """
  name = train_config.strategy
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    device = gpus[0].name if gpus else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)
  if name == "mirrored":
    devices = list(train_config.mirrored_devices) or None
    if devices is None and not tf.config.list_logical_devices("GPU"):
      devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    logging.info("MirroredStrategy over %d replicas: %s", strategy.num_replicas_in_sync,
                 strategy.extended.worker_devices)
    return strategy
  if name == "multi_worker":
    tf_config = os.environ.get("TF_CONFIG", "")
    if not tf_config:
      raise ValueError("train.strategy=multi_worker needs the TF_CONFIG environment variable "
                       "(cluster spec and this task's type and index)")
    try:
      parsed = json.loads(tf_config)
    except json.JSONDecodeError as error:
      raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error
    if "cluster" not in parsed or "task" not in parsed:
      raise ValueError(f"TF_CONFIG needs 'cluster' and 'task' keys, got {sorted(parsed)}")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  raise ValueError(f"unknown train.strategy {name!r}; expected one_device, mirrored or "
                   "multi_worker")


def _checked_policy(policy, option):
  """`policy`, "auto" resolved for this machine; an unknown name is a ValueError naming `option`."""
  if policy not in train_config_lib.MIXED_PRECISIONS:
    raise ValueError(f"{option} = {policy!r}; expected one of "
                     f"{', '.join(train_config_lib.MIXED_PRECISIONS)}")
  return native_bfloat16.resolve(policy, option)


def set_precision_policy(train_config):
  """Sets the global Keras dtype policy from `train.mixed_precision` ("auto" resolved); call
  before building. Returns the policy set."""
  policy = _checked_policy(train_config.mixed_precision, "train.mixed_precision")
  tf_keras.mixed_precision.set_global_policy(policy)
  return policy


def maybe_wrap_for_loss_scaling(optimizer, train_config):
  """Wraps the optimizer in a dynamic `LossScaleOptimizer` under mixed_float16 only."""
  if train_config.mixed_precision == "mixed_float16":
    return tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
  return optimizer


def is_chief(strategy):
  """True on the worker that writes checkpoints, summaries and params.yaml."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  task_type, task_id = resolver.task_type, resolver.task_id
  return task_type is None or task_type == "chief" or (
      task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict())


def worker_dir(model_dir, strategy):
  """Where this worker writes: `model_dir` on the chief, a scratch sub-folder elsewhere.

  Every MultiWorkerMirroredStrategy worker must take part in saving a checkpoint (saving has
  collective ops), but only the chief's copy is kept.
  """
  if is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, "workers_tmp", f"{resolver.task_type}_{resolver.task_id}")
