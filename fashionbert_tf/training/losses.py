"""The three FashionBERT pre-training losses (paper section 2.2, Eq. 1-3).

Which pairs each loss uses (`train.masked_losses_on`):
  * l_TIA uses every pair, positive and negative (Eq. 3 is defined over both).
  * l_MLM and l_MPM use the positive (matched) pairs only by default ("positive"): predicting a
    masked word from a mismatched image, or a masked patch from a mismatched text, trains the
    model on noise. "all" uses every pair. `example_weights_for_masked_losses` builds the mask.

Every loss is a weighted mean whose denominator may be passed in (`normalizer`). The pretrainer
passes the denominator summed over all replicas, so each replica's loss is its share of the global
batch's loss: summing the replicas' losses (and gradients) gives exactly the one-device value.
Without `normalizer` the local denominator is used. A batch with nothing to average (no masked
position, no positive pair) has loss 0, never NaN.

Losses are computed in float32 whatever the compute dtype.
"""

import tensorflow as tf


def example_weights_for_masked_losses(tia_label, masked_losses_on="positive"):
  """float32 [B]: 1 for the pairs MLM and MPM are computed on, else 0.

  Args:
    tia_label: int [B], 1 = matched pair.
    masked_losses_on: "positive" (matched pairs only) or "all".
  """
  if masked_losses_on == "positive":
    return tf.cast(tf.equal(tia_label, 1), tf.float32)
  if masked_losses_on == "all":
    return tf.ones_like(tia_label, tf.float32)
  raise ValueError(f"masked_losses_on must be 'positive' or 'all', got {masked_losses_on!r}")


def masked_lm_weights(masked_lm_weights_, example_weights):
  """float32 [B, P]: the contract's per-slot weights times the per-pair selection [B]."""
  return tf.cast(masked_lm_weights_, tf.float32) * example_weights[:, tf.newaxis]


def masked_lm_loss(mlm_logits, masked_lm_ids, weights, normalizer=None):
  """l_MLM, paper Eq. 1: -E log P(t_i | t_\\i), over the masked positions.

  Args:
    mlm_logits: float [B, P, V], the MLM head's logits at the masked slots.
    masked_lm_ids: int [B, P], the original token ids.
    weights: float [B, P], 1 for a counted masked position, 0 for padding / excluded pairs.
    normalizer: scalar denominator (default: sum of `weights`).

  Returns:
    float32 scalar: sum(weights * cross_entropy) / normalizer (0 when the normalizer is 0).
  """
  cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(masked_lm_ids, tf.int32), logits=tf.cast(mlm_logits, tf.float32))
  return _weighted_mean(cross_entropy, weights, normalizer)


def masked_patch_loss(mpm_logits, mpm_targets, weights, normalizer=None):
  """l_MPM, paper Eq. 2: KL(softmax(original feature) || softmax(predicted)) per masked patch.

  The distributions are over the D feature dimensions of a patch. The paper writes Eq. 2 as
  KL(Distr.(p_i | p_\\i) | Distr.(p_i)); we use the usual distillation direction,
  KL(target || prediction) = sum_d p_d (log p_d - log q_d), whose gradient is softmax(pred) - p.

  Args:
    mpm_logits: float [B, M, D], predicted distribution logits of each masked patch.
    mpm_targets: float [B, M, D], the original (unmasked) patch features; treated as constants.
    weights: float [B, M], 1 for a counted masked patch, 0 for padding / excluded pairs.
    normalizer: scalar denominator (default: sum of `weights`).

  Returns:
    float32 scalar: sum(weights * KL) / normalizer (0 when the normalizer is 0).
  """
  target_log_probs = tf.nn.log_softmax(tf.stop_gradient(tf.cast(mpm_targets, tf.float32)), -1)
  predicted_log_probs = tf.nn.log_softmax(tf.cast(mpm_logits, tf.float32), -1)
  kl = tf.reduce_sum(tf.exp(target_log_probs) * (target_log_probs - predicted_log_probs), -1)
  return _weighted_mean(kl, weights, normalizer)


def alignment_loss(tia_logits, tia_label, normalizer=None):
  """l_TIA, paper Eq. 3: binary cross-entropy of match / no match, over every pair.

  The head has two logits (class 1 = match); softmax cross-entropy over the two classes is the
  binary cross-entropy of Eq. 3 with P(y_hat = 1) = softmax(tia_logits)[:, 1].

  Args:
    tia_logits: float [B, 2].
    tia_label: int [B], 1 = matched pair.
    normalizer: scalar denominator (default: B).

  Returns:
    float32 scalar.
  """
  cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(tia_label, tf.int32), logits=tf.cast(tia_logits, tf.float32))
  return _weighted_mean(cross_entropy, tf.ones_like(cross_entropy), normalizer)


def alignment_correct(tia_logits, tia_label):
  """float32 [B]: 1 where argmax(tia_logits) equals the label."""
  return tf.cast(tf.equal(tf.argmax(tia_logits, -1, output_type=tf.int32),
                          tf.cast(tia_label, tf.int32)), tf.float32)


def masked_lm_correct(mlm_logits, masked_lm_ids):
  """float32 [B, P]: 1 where the MLM head's top token is the original one."""
  return tf.cast(tf.equal(tf.argmax(mlm_logits, -1, output_type=tf.int32),
                          tf.cast(masked_lm_ids, tf.int32)), tf.float32)


def _weighted_mean(values, weights, normalizer):
  weights = tf.cast(weights, tf.float32)
  total = tf.reduce_sum(values * weights)
  if normalizer is None:
    normalizer = tf.reduce_sum(weights)
  return tf.math.divide_no_nan(total, tf.cast(normalizer, tf.float32))
