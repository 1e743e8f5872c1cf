"""Which ops an exported SavedModel may contain so that TF Serving's standard binary can run it.

TF Serving's `tensorflow_model_server` links TensorFlow's core kernels and the classic tf.text ops,
but not the newer "fast" tf.text kernels: a SavedModel using `FastBertTokenizer` fails to load with
"Op type not registered 'FastBertNormalize'" (tensorflow/serving issue #2064), and likewise for the
FastWordpiece* ops and RoundRobinTrim. Python-callback ops (`tf.py_function`, `tf.numpy_function`)
run nowhere outside Python.

Allowlist = (ops registered by core TensorFlow) - (Python-callback ops) + (the ops of tf.text's
classic `BertTokenizer`). Every other tf.text op is refused, so a tokenizer change that slips in a
new tf.text kernel fails the check instead of failing in production.
"""

import glob
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

# tf.text's classic BertTokenizer(lower_case=True): BasicTokenizer (CaseFoldUTF8, NormalizeUTF8 NFD,
# RegexSplitWithOffsets) then WordpieceTokenizer (WordpieceTokenizeWithOffsets).
CLASSIC_BERT_TOKENIZER_OPS = frozenset({
    "CaseFoldUTF8",
    "NormalizeUTF8",
    "NormalizeUTF8WithOffsetsMap",
    "RegexSplitWithOffsets",
    "WordpieceTokenizeWithOffsets",
})
# Known not to be in TF Serving (issue #2064) or not runnable outside Python.
KNOWN_UNSERVABLE_OPS = frozenset({
    "FastBertNormalize", "FastWordpieceTokenizeWithOffsets", "FastWordpieceDetokenize",
    "TFText>FastWordpieceTokenizeWithOffsets", "TFText>RoundRobinTrim", "RoundRobinTrim",
    "TFText>FastBertNormalize", "PyFunc", "PyFuncStateless", "EagerPyFunc",
})


def tensorflow_text_ops():
  """Names of the ops the installed tensorflow_text registers.

  Read from its op libraries: `tf.load_op_library` on an already loaded library returns its
  generated module, whose CamelCase attributes are the raw op wrappers. Namespaced ops
  ("TFText>...") have no such attribute; `is_allowed` refuses every op with a ">" instead.
  """
  import tensorflow_text  # pylint: disable=g-import-not-at-top,unused-import
  folder = os.path.join(os.path.dirname(tensorflow_text.__file__), "python", "ops")
  names = set()
  for library in glob.glob(os.path.join(folder, "_*.so")):
    try:
      module = tf.load_op_library(library)
    except (tf.errors.NotFoundError, OSError):
      continue
    names.update(name for name in dir(module)
                 if name[:1].isupper() and op_def_registry.get(name) is not None
                 and getattr(getattr(module, name), "__module__", None) == module.__name__)
  return frozenset(names)


def is_allowed(op, text_ops):
  """True when TF Serving's standard binary can run op type `op` (see the module docstring)."""
  if op in CLASSIC_BERT_TOKENIZER_OPS:
    return True
  if op in KNOWN_UNSERVABLE_OPS or ">" in op or op in text_ops:
    return False
  return op_def_registry.get(op) is not None


def saved_model_op_types(export_path):
  """Every op type in the SavedModel's graphs and in all functions of their function library.

  Returns:
    dict op type -> sorted list of places it occurs ("graph" or the function's name).
  """
  path = os.path.join(export_path, "saved_model.pb")
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(path, "rb") as f:
    saved_model.ParseFromString(f.read())
  places = {}
  for meta_graph in saved_model.meta_graphs:
    graph = meta_graph.graph_def
    function_names = {function.signature.name for function in graph.library.function}
    for node in graph.node:
      if node.op not in function_names:
        places.setdefault(node.op, set()).add("graph")
    for function in graph.library.function:
      for node in function.node_def:
        if node.op not in function_names:
          places.setdefault(node.op, set()).add(function.signature.name)
  return {op: sorted(where) for op, where in places.items()}


def disallowed_ops(export_path):
  """Ops of the SavedModel outside the allowlist: dict op -> where it occurs (empty = servable)."""
  text_ops = tensorflow_text_ops()
  bad = {}
  for op, where in saved_model_op_types(export_path).items():
    if not is_allowed(op, text_ops):
      bad[op] = where
  return bad


def check_servable(export_path):
  """Raises ValueError naming each op TF Serving's standard binary could not run."""
  bad = disallowed_ops(export_path)
  if bad:
    lines = [f"  {op} (in {', '.join(where[:3])}{' ...' if len(where) > 3 else ''})"
             for op, where in sorted(bad.items())]
    raise ValueError(f"SavedModel {export_path} uses ops TF Serving's standard binary lacks "
                     "(allowlist: fashionbert_tf/serving/op_allowlist.py):\n" + "\n".join(lines))
