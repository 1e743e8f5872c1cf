"""Copies a canonical table into a built FashionBERT, after checking every variable it needs.

Every variable of the encoder's first k layers (plus embeddings and pooler) is checked against the
table; the first missing or mis-shaped one is named in a `CheckpointMismatchError`, and only when
all fit are they assigned: never a half-loaded model. Checkpoint layers beyond k are ignored (the
paper's 2/4/6/12-layer variants load the first k). Heads (`load_heads`): the MLM transform and
output bias load when the checkpoint has the whole MLM head, else they stay freshly initialized;
the TIA classifier starts from the next-sentence head when there is one. A TF-Hub source is then
verified against its SavedModel's outputs.
"""

from absl import logging
import tensorflow as tf

from fashionbert_tf.modeling.checkpoints import canonical_table
from fashionbert_tf.modeling.checkpoints import tfhub


def _describe(pretrained, name):
  origin = pretrained.origins.get(name) or pretrained.missing.get(name)
  return f"{name!r}" + (f" ({origin!r} in the source)" if origin and origin != name else "")


def _check(pretrained, name, variable):
  """The checkpoint value for `variable`, or a canonical_table.CheckpointMismatchError naming it."""
  if name not in pretrained.weights:
    raise canonical_table.CheckpointMismatchError(
        f"{pretrained.source}: missing variable {_describe(pretrained, name)} needed by model "
        f"variable {variable.name}")
  value = pretrained.weights[name]
  if tuple(value.shape) != tuple(variable.shape):
    raise canonical_table.CheckpointMismatchError(
        f"{pretrained.source}: variable {_describe(pretrained, name)} has shape "
        f"{list(value.shape)} but model variable {variable.name} needs {list(variable.shape)}")
  return value


def _head_plan(pretrained, names, variables, head):
  """All of a head's (variable, value) pairs, or [] when the checkpoint has none of them."""
  present = [n for n in names if n in pretrained.weights]
  if not present:
    logging.info("%s has no %s head; it starts freshly initialized", pretrained.source, head)
    return []
  if len(present) != len(names):
    absent = [n for n in names if n not in pretrained.weights]
    raise canonical_table.CheckpointMismatchError(
        f"{pretrained.source}: {head} head is incomplete: missing variable {absent[0]!r}")
  return [(v, _check(pretrained, n, v)) for n, v in zip(names, variables)]


def assign_pretrained_bert(model, pretrained, load_heads=True):
  """Copies `pretrained` into `model` (a built `FashionBertModel`) after checking every variable.

  Raises:
    CheckpointMismatchError: a needed variable is missing or mis-shaped (nothing assigned), or
      (tfhub) the loaded encoder does not reproduce the SavedModel's outputs.
  """
  plan = []
  seen = set()
  for variable in model.encoder.variables:
    if id(variable) in seen:
      continue
    seen.add(id(variable))
    name = canonical_table.canonical_name(variable.name)
    if name is None:
      raise canonical_table.CheckpointMismatchError(
          f"encoder variable {variable.name} has no BERT checkpoint name")
    plan.append((variable, _check(pretrained, name, variable)))
  if load_heads:
    mlm = model.mlm_head
    plan += _head_plan(pretrained, canonical_table.MLM_HEAD_NAMES,
                       (mlm.dense.kernel, mlm.dense.bias, mlm.layer_norm.gamma,
                        mlm.layer_norm.beta, mlm.bias), "MLM")
    tia = model.tia_head.classifier
    plan += _head_plan(pretrained, canonical_table.NSP_HEAD_NAMES, (tia.kernel, tia.bias),
                       "next-sentence (TIA)")
  for variable, value in plan:
    variable.assign(tf.cast(value, variable.dtype))
  logging.info("Loaded %d variables from %s", len(plan), pretrained.source)
  if pretrained.reference_saved_model:
    tfhub.verify_against_saved_model(model.encoder, pretrained)
