"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests` in a SavedModel version.

TF Serving replays the records of that file (a TFRecord of `tensorflow.serving.PredictionLog`
protos) when it loads a version, so the first real request does not pay for graph optimization
(https://www.tensorflow.org/tfx/serving/saved_model_warmup).

The `tensorflow-serving-api` package is not a dependency of this project. When it is importable,
its generated classes are used; otherwise the few messages needed are built here from
`descriptor_pb2` definitions that mirror, field number for field number, TF Serving's
`tensorflow_serving/apis/{model,predict,prediction_log}.proto` (only the fields written here;
unknown fields are simply absent, which proto3 readers accept). `TensorProto` is TensorFlow's
own class, so the records are byte-compatible with what `tensorflow_serving.apis` would write.
"""

import functools
import os

import tensorflow as tf
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from tensorflow.core.framework import tensor_pb2

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")

_PACKAGE = "tensorflow.serving"
_FILE_NAME = "fashionbert_tf/serving/tf_serving_prediction_log_subset.proto"


def _field(message, name, number, field_type, type_name=None, repeated=False):
  field = message.field.add()
  field.name = name
  field.number = number
  field.type = field_type
  field.label = (descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated else
                 descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
  if type_name:
    field.type_name = type_name
  return field


@functools.lru_cache(maxsize=None)
def _hand_built_classes():
  """(ModelSpec, PredictRequest, PredictLog, PredictionLog) classes from mirrored descriptors."""
  fdp = descriptor_pb2.FieldDescriptorProto
  file_proto = descriptor_pb2.FileDescriptorProto(
      name=_FILE_NAME, package=_PACKAGE, syntax="proto3",
      dependency=["tensorflow/core/framework/tensor.proto"])

  # model.proto: message ModelSpec { string name = 1; string signature_name = 3; }
  model_spec = file_proto.message_type.add(name="ModelSpec")
  _field(model_spec, "name", 1, fdp.TYPE_STRING)
  _field(model_spec, "signature_name", 3, fdp.TYPE_STRING)

  # predict.proto: message PredictRequest { ModelSpec model_spec = 1;
  #   map<string, TensorProto> inputs = 2; repeated string output_filter = 3; }
  request = file_proto.message_type.add(name="PredictRequest")
  _field(request, "model_spec", 1, fdp.TYPE_MESSAGE, f".{_PACKAGE}.ModelSpec")
  entry = request.nested_type.add(name="InputsEntry")
  entry.options.map_entry = True
  _field(entry, "key", 1, fdp.TYPE_STRING)
  _field(entry, "value", 2, fdp.TYPE_MESSAGE, ".tensorflow.TensorProto")
  _field(request, "inputs", 2, fdp.TYPE_MESSAGE, f".{_PACKAGE}.PredictRequest.InputsEntry",
         repeated=True)
  _field(request, "output_filter", 3, fdp.TYPE_STRING, repeated=True)

  # prediction_log.proto: message PredictLog { PredictRequest request = 1; }
  predict_log = file_proto.message_type.add(name="PredictLog")
  _field(predict_log, "request", 1, fdp.TYPE_MESSAGE, f".{_PACKAGE}.PredictRequest")
  # message PredictionLog { oneof log_type { PredictLog predict_log = 6; ... } }
  prediction_log = file_proto.message_type.add(name="PredictionLog")
  prediction_log.oneof_decl.add(name="log_type")
  field = _field(prediction_log, "predict_log", 6, fdp.TYPE_MESSAGE, f".{_PACKAGE}.PredictLog")
  field.oneof_index = 0

  pool = descriptor_pool.DescriptorPool()
  # TensorProto's file and its own imports, added to a private pool so the global one is untouched.
  def add_with_dependencies(file_descriptor):
    for dependency in file_descriptor.dependencies:
      add_with_dependencies(dependency)
    try:
      pool.FindFileByName(file_descriptor.name)
    except KeyError:
      proto = descriptor_pb2.FileDescriptorProto()
      file_descriptor.CopyToProto(proto)
      pool.Add(proto)
  add_with_dependencies(tensor_pb2.DESCRIPTOR)
  pool.Add(file_proto)
  names = ("ModelSpec", "PredictRequest", "PredictLog", "PredictionLog")
  return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
               for name in names)


def prediction_log_classes():
  """(PredictRequest, PredictionLog) classes: tensorflow_serving.apis' if importable, else ours."""
  try:
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
    return predict_pb2.PredictRequest, prediction_log_pb2.PredictionLog
  except ImportError:
    _, request_class, _, log_class = _hand_built_classes()
    return request_class, log_class


def serialized_prediction_log(model_name, signature_name, inputs):
  """One serialized `PredictionLog` holding a `PredictRequest`.

  Args:
    model_name: the servable name (TF Serving ignores it for warm-up; kept for readers).
    signature_name: e.g. "serving_default".
    inputs: dict name -> array-like, converted with `tf.make_tensor_proto`.

  Returns:
    bytes.
  """
  request_class, log_class = prediction_log_classes()
  request = request_class()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  for name, value in inputs.items():
    # Through bytes: the hand-built pool has its own TensorProto class (same wire format).
    request.inputs[name].ParseFromString(tf.make_tensor_proto(value).SerializeToString())
  log = log_class()
  log.predict_log.request.CopyFrom(request)
  return log.SerializeToString()


def write_warmup_requests(export_path, requests, model_name="fashionbert"):
  """Writes `<export_path>/assets.extra/tf_serving_warmup_requests`.

  Args:
    export_path: a SavedModel version folder (`<export_dir>/<version>`).
    requests: iterable of (signature_name, inputs dict).
    model_name: servable name written into each request's ModelSpec.

  Returns:
    the file's path.
  """
  path = os.path.join(export_path, WARMUP_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for signature_name, inputs in requests:
      writer.write(serialized_prediction_log(model_name, signature_name, inputs))
  return path


def read_warmup_requests(path):
  """Parses a warm-up file back: list of (signature_name, {input name: np.ndarray})."""
  _, log_class = prediction_log_classes()
  parsed = []
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    log = log_class.FromString(record)
    if not log.HasField("predict_log"):
      raise ValueError(f"{path}: a record is not a predict_log")
    request = log.predict_log.request
    inputs = {name: tf.make_ndarray(tensor_pb2.TensorProto.FromString(tensor.SerializeToString()))
              for name, tensor in request.inputs.items()}
    parsed.append((request.model_spec.signature_name, inputs))
  return parsed
