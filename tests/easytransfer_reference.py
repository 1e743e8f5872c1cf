"""Test helpers for the authors' model: a TF1 checkpoint with their names, and their forward pass
in NumPy, written from EasyTransfer's code (modeling_imagebert.py, layers/), independent of ours.

Their network, as the NumPy code below computes it:
  text  = LayerNorm(word[ids] + token_type[segment] + position[0..T-1])              (eps 1e-12)
  image = LayerNorm(feature @ image_projector + patch_type[1] + patch_position[0..63])
  x = [text; image]; attention adds (1 - [input_mask; image_mask]) * -10000 on the keys;
  per layer: x = LN(x + (softmax(QK^T / sqrt(d) + adder) V) W_o + b_o);
             x = LN(x + gelu_tanh(x W_i + b_i) W_2 + b_2)
  pooled = tanh(x[:, 0] W_p + b_p); nsp_logits = pooled @ output_weights^T + output_bias.
"""

import numpy as np
import tensorflow as tf

EPSILON = 1e-12


def their_weights(seed=0, hidden=16, layers=2, intermediate=32, vocab=40, positions=80,
                  feature_dim=24, patches=64):
  """Random weights under their bare variable names and shapes."""
  rng = np.random.default_rng(seed)

  def normal(*shape, scale=0.2):
    return (rng.standard_normal(shape) * scale).astype(np.float32)

  def gamma(n):
    return (1.0 + rng.standard_normal(n) * 0.1).astype(np.float32)

  w = {
      "bert/embeddings/word_embeddings": normal(vocab, hidden, scale=0.5),
      "bert/embeddings/position_embeddings": normal(positions, hidden),
      "bert/embeddings/token_type_embeddings": normal(2, hidden),
      "bert/embeddings/LayerNorm/gamma": gamma(hidden),
      "bert/embeddings/LayerNorm/beta": normal(hidden, scale=0.1),
      "bert/image_embeddings/image_projector": normal(feature_dim, hidden),
      "bert/image_embeddings/patch_position_embeddings": normal(patches, hidden),
      "bert/image_embeddings/patch_type_embeddings": normal(2, hidden),
      "bert/image_embeddings/ImageEmbLayerNorm/gamma": gamma(hidden),
      "bert/image_embeddings/ImageEmbLayerNorm/beta": normal(hidden, scale=0.1),
      "bert/pooler/dense/kernel": normal(hidden, hidden, scale=0.4),
      "bert/pooler/dense/bias": normal(hidden, scale=0.1),
      "cls/predictions/transform/dense/kernel": normal(hidden, hidden),
      "cls/predictions/transform/dense/bias": normal(hidden, scale=0.1),
      "cls/predictions/transform/LayerNorm/gamma": gamma(hidden),
      "cls/predictions/transform/LayerNorm/beta": normal(hidden, scale=0.1),
      "cls/predictions/output_bias": normal(vocab, scale=0.1),
      "cls/seq_relationship/output_weights": normal(2, hidden, scale=0.8),
      "cls/seq_relationship/output_bias": normal(2, scale=0.1),
      "cls/img_predictions/output_weights": normal(hidden, feature_dim),
  }
  for i in range(layers):
    scope = f"bert/encoder/layer_{i}/"
    for part in ("query", "key", "value"):
      w[f"{scope}attention/self/{part}/kernel"] = normal(hidden, hidden, scale=0.4)
      w[f"{scope}attention/self/{part}/bias"] = normal(hidden, scale=0.1)
    w[f"{scope}attention/output/dense/kernel"] = normal(hidden, hidden, scale=0.3)
    w[f"{scope}attention/output/dense/bias"] = normal(hidden, scale=0.1)
    w[f"{scope}intermediate/dense/kernel"] = normal(hidden, intermediate, scale=0.3)
    w[f"{scope}intermediate/dense/bias"] = normal(intermediate, scale=0.1)
    w[f"{scope}output/dense/kernel"] = normal(intermediate, hidden, scale=0.2)
    w[f"{scope}output/dense/bias"] = normal(hidden, scale=0.1)
    for block in ("attention/output", "output"):
      w[f"{scope}{block}/LayerNorm/gamma"] = gamma(hidden)
      w[f"{scope}{block}/LayerNorm/beta"] = normal(hidden, scale=0.1)
  return w


def write_tf1_checkpoint(prefix, weights, scope="image_bert_pre_trained_model/", global_step=None,
                         adam_slots=True):
  """Saves `weights` with a TF1 Saver in a graph, names exactly `scope + name`.

  With `adam_slots`, also Adam's `<name>/Adam`, `<name>/Adam_1`, `beta1_power`, `beta2_power`;
  with `global_step`, a `global_step` variable and the Saver's `-<step>` suffix. Returns the
  written prefix.
  """
  graph = tf.Graph()
  with graph.as_default():
    v1 = tf.compat.v1
    for name, value in weights.items():
      v1.get_variable(scope + name, initializer=tf.constant(value))
      if adam_slots:
        v1.get_variable(scope + name + "/Adam", initializer=tf.zeros_like(value))
        v1.get_variable(scope + name + "/Adam_1", initializer=tf.ones_like(value) * 1e-3)
    if adam_slots:
      v1.get_variable("beta1_power", initializer=tf.constant(0.9, tf.float32))
      v1.get_variable("beta2_power", initializer=tf.constant(0.999, tf.float32))
    if global_step is not None:
      v1.get_variable("global_step", initializer=tf.constant(global_step, tf.int64),
                      trainable=False)
    saver = v1.train.Saver()
    with v1.Session(graph=graph) as session:
      session.run(v1.global_variables_initializer())
      return saver.save(session, prefix, global_step=global_step)


def _layer_norm(x, gamma, beta):
  mean = x.mean(-1, keepdims=True)
  variance = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(variance + EPSILON) * gamma + beta


def _gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def their_forward(w, input_ids, input_mask, segment_ids, image_feature, image_mask, num_heads):
  """Their model in inference mode, float64: (nsp_logits [B, 2], sequence_output [B, T+64, H])."""
  w = {k: v.astype(np.float64) for k, v in w.items()}
  batch, text_length = input_ids.shape
  text = (w["bert/embeddings/word_embeddings"][input_ids]
          + w["bert/embeddings/token_type_embeddings"][segment_ids]
          + w["bert/embeddings/position_embeddings"][:text_length][None])
  text = _layer_norm(text, w["bert/embeddings/LayerNorm/gamma"],
                     w["bert/embeddings/LayerNorm/beta"])
  patches = image_feature.shape[1]
  image = (np.einsum("bpd,dh->bph", image_feature.astype(np.float64),
                     w["bert/image_embeddings/image_projector"])
           + w["bert/image_embeddings/patch_type_embeddings"][1]
           + w["bert/image_embeddings/patch_position_embeddings"][:patches][None])
  image = _layer_norm(image, w["bert/image_embeddings/ImageEmbLayerNorm/gamma"],
                      w["bert/image_embeddings/ImageEmbLayerNorm/beta"])
  x = np.concatenate([text, image], axis=1)
  mask = np.concatenate([input_mask, image_mask], axis=1).astype(np.float64)
  adder = (1.0 - mask)[:, None, None, :] * -10000.0  # [B, 1, 1, S]: on the keys
  hidden = x.shape[-1]
  head = hidden // num_heads
  layer = 0
  while f"bert/encoder/layer_{layer}/intermediate/dense/kernel" in w:
    s = f"bert/encoder/layer_{layer}/"

    def heads(name):
      y = x @ w[s + f"attention/self/{name}/kernel"] + w[s + f"attention/self/{name}/bias"]
      return y.reshape(batch, -1, num_heads, head)
    q, k, v = heads("query"), heads("key"), heads("value")
    scores = np.einsum("bind,bjnd->bnij", q, k) / np.sqrt(head) + adder
    context = np.einsum("bnij,bjnd->bind", _softmax(scores), v).reshape(batch, -1, hidden)
    attention = _layer_norm(
        context @ w[s + "attention/output/dense/kernel"] + w[s + "attention/output/dense/bias"]
        + x, w[s + "attention/output/LayerNorm/gamma"], w[s + "attention/output/LayerNorm/beta"])
    inner = _gelu_tanh(attention @ w[s + "intermediate/dense/kernel"]
                       + w[s + "intermediate/dense/bias"])
    x = _layer_norm(inner @ w[s + "output/dense/kernel"] + w[s + "output/dense/bias"] + attention,
                    w[s + "output/LayerNorm/gamma"], w[s + "output/LayerNorm/beta"])
    layer += 1
  pooled = np.tanh(x[:, 0] @ w["bert/pooler/dense/kernel"] + w["bert/pooler/dense/bias"])
  logits = (pooled @ w["cls/seq_relationship/output_weights"].T
            + w["cls/seq_relationship/output_bias"])
  return logits, x


def their_mpm_logits(w, sequence_output, text_length, masked_patch_positions):
  """Their MPM head: gathered patch outputs @ cls/img_predictions/output_weights."""
  patches = sequence_output[:, text_length:]
  gathered = np.take_along_axis(patches, masked_patch_positions[:, :, None], axis=1)
  return gathered @ w["cls/img_predictions/output_weights"].astype(np.float64)


def their_mlm_logits(w, sequence_output, masked_lm_positions):
  """Their MLM head: dense + gelu_tanh + LayerNorm, tied word embeddings, output bias."""
  w = {k: v.astype(np.float64) for k, v in w.items()}
  gathered = np.take_along_axis(sequence_output, masked_lm_positions[:, :, None], axis=1)
  h = _gelu_tanh(gathered @ w["cls/predictions/transform/dense/kernel"]
                 + w["cls/predictions/transform/dense/bias"])
  h = _layer_norm(h, w["cls/predictions/transform/LayerNorm/gamma"],
                  w["cls/predictions/transform/LayerNorm/beta"])
  return h @ w["bert/embeddings/word_embeddings"].T + w["cls/predictions/output_bias"]


def softmax_match(logits):
  return _softmax(np.asarray(logits, np.float64))[:, 1]
