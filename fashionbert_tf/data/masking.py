"""Masking for FashionBERT's MLM and MPM tasks (paper 2.2), vectorized and stateless-seeded.

Whole-word masking (paper 2.2, "Masked Language Modeling": WWM [6], tokens masked with
probability 15%), stated plainly as in google-research/bert `create_pretraining_data.py`:
  - A "word" is what BertTokenizer's basic tokenizer splits off (punctuation is its own word);
    its WordPieces are masked all together or not at all.
  - [CLS] and [SEP] are never masked (they are added after masking), nor is any word containing a
    special token ([UNK], [PAD], [CLS], [SEP], [MASK]).
  - Each text masks k = floor(n * rate) + Bernoulli(frac(n * rate)) of its n maskable words, chosen
    uniformly at random, so the expected masked share is exactly `word_mask_rate` (BERT rounds
    instead, which biases short texts; a text may thus get 0 masked words).
  - At most `max_predictions_per_seq` WordPieces are masked: selected words that would not fit
    entirely are dropped (never partly masked).
  - BERT's 80/10/10 rule, decided once per masked word (as in the paper's figure, "long sleeve
    [MSK] [MSK] in black"): 80% every piece -> [MASK], 10% every piece -> a random non-special
    WordPiece, 10% unchanged.

Patch masking (paper 2.2, "Masked Patch Modeling": patches masked with probability 10%): each
example masks k = floor(64 * rate) + Bernoulli(frac(64 * rate)) of the 64 patches (expected share
exactly `patch_mask_rate`), recorded as positions + weights in M = ceil(64 * rate) slots; the model
zeroes those patches' features.

Why not tensorflow_text's RandomItemSelector / MaskValuesChooser: they draw with stateful random
ops (`tf.random.shuffle` inside `map_fn`, `random_uniform`), which are not reproducible under a
parallel tf.data map and cost a per-row `map_fn`; here every draw is a stateless op seeded from
(data.seed, chunk index), vectorized over the chunk, and the same 80/10/10 semantics apply.
"""

import math

import tensorflow as tf

from fashionbert_tf.data import contract


def num_patch_slots(patch_mask_rate, num_patches=contract.NUM_PATCHES):
  """M: slots for masked patches, ceil(64 * rate)."""
  return int(math.ceil(num_patches * patch_mask_rate - 1e-9))


def _stochastic_round(values, seed):
  """float [B] -> int32 [B]: floor(v) + 1 with probability frac(v) (so E[result] = v)."""
  floor = tf.floor(values)
  bump = tf.random.stateless_uniform(tf.shape(values), seed) < (values - floor)
  return tf.cast(floor, tf.int32) + tf.cast(bump, tf.int32)


def _seeds(seed, count):
  seed = tf.cast(seed, tf.int64)
  return [tf.random.experimental.stateless_fold_in(seed, i) for i in range(count)]


class WholeWordMasker:
  """Whole-word masking of WordPiece texts (module docstring).

  Args:
    vocab_size: V; random replacements are drawn from the non-special ids in [0, V).
    cls_id, sep_id, mask_id: ids of [CLS], [SEP], [MASK].
    special_ids: ids never masked (words containing one are not maskable).
    max_predictions: P, masked-LM slots per example.
    word_mask_rate, mask_token_rate, random_token_rate: paper 2.2 / BERT: 0.15, 0.8, 0.1.
  """

  def __init__(self, vocab_size, cls_id, sep_id, mask_id, special_ids, max_predictions,
               word_mask_rate=0.15, mask_token_rate=0.8, random_token_rate=0.1):
    if not 0.0 <= word_mask_rate <= 1.0:
      raise ValueError(f"word_mask_rate must be in [0, 1], got {word_mask_rate}")
    if mask_token_rate < 0 or random_token_rate < 0 or mask_token_rate + random_token_rate > 1:
      raise ValueError("need mask_token_rate, random_token_rate >= 0 with sum <= 1, got "
                       f"{mask_token_rate}, {random_token_rate}")
    self.vocab_size = vocab_size
    self.cls_id, self.sep_id, self.mask_id = cls_id, sep_id, mask_id
    self.special_ids = sorted(set(special_ids) | {cls_id, sep_id, mask_id})
    self.max_predictions = max_predictions
    self.word_mask_rate = word_mask_rate
    self.mask_token_rate = mask_token_rate
    self.random_token_rate = random_token_rate
    special = set(self.special_ids)
    self._replacement_ids = tf.constant(
        [i for i in range(vocab_size) if i not in special], tf.int64)

  @classmethod
  def from_config(cls, data_config, tokenizer):
    """From a `DataConfig` and a `tokenization.FashionBertTokenizer`."""
    return cls(tokenizer.vocab_size, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id,
               [tokenizer.pad_id, tokenizer.unk_id], data_config.max_predictions_per_seq,
               data_config.word_mask_rate, data_config.mask_token_rate,
               data_config.random_token_rate)

  def __call__(self, word_pieces, seed):
    """Masks a batch of tokenized texts.

    Args:
      word_pieces: int RaggedTensor [B, (words), (wordpieces)] without [CLS]/[SEP], already
        within the length limit.
      seed: int [2], the stateless seed of this batch.

    Returns:
      dict with
        input_word_ids       int32 RaggedTensor [B, (T)]: `[CLS] masked text [SEP]`;
        masked_lm_positions  int32 [B, P]: positions in input_word_ids, 0-padded;
        masked_lm_ids        int32 [B, P]: original ids there, 0-padded;
        masked_lm_weights    float32 [B, P]: 1.0 real slot, 0.0 padding.
    """
    select_seed, count_seed, action_seed, random_seed = _seeds(seed, 4)
    word_pieces = tf.cast(word_pieces, tf.int64)
    pieces_per_word = word_pieces.row_lengths(axis=2)                    # [B, (W)]
    flat = word_pieces.flat_values
    is_special = tf.reduce_any(
        tf.equal(flat[:, None], tf.constant(self.special_ids, tf.int64)[None, :]), axis=1)
    word_has_special = tf.reduce_any(word_pieces.with_flat_values(is_special), axis=2)
    maskable = tf.logical_not(word_has_special).to_tensor(False)         # [B, Wm]
    pieces_dense = pieces_per_word.to_tensor(0)                          # [B, Wm]
    batch_size = tf.shape(maskable)[0]
    max_words = tf.shape(maskable)[1]

    # How many words: floor(n * rate) + Bernoulli(frac), n = maskable words.
    num_maskable = tf.reduce_sum(tf.cast(maskable, tf.float32), axis=1)
    num_to_mask = _stochastic_round(num_maskable * self.word_mask_rate, count_seed)

    # Which words: a uniformly random order of the maskable words, first num_to_mask, then drop
    # those whose pieces would overflow the P slots (never a partial word).
    scores = tf.random.stateless_uniform([batch_size, max_words], select_seed)
    scores = tf.where(maskable, scores, 2.0)
    order = tf.argsort(scores, axis=1, stable=True)                     # [B, Wm]
    rank = tf.argsort(order, axis=1, stable=True)                       # inverse permutation
    pieces_in_order = tf.gather(pieces_dense, order, batch_dims=1)
    maskable_in_order = tf.gather(maskable, order, batch_dims=1)
    within_count = tf.range(max_words)[None, :] < num_to_mask[:, None]
    fits = tf.math.cumsum(pieces_in_order, axis=1) <= self.max_predictions
    chosen_in_order = within_count & fits & maskable_in_order
    chosen_word = tf.gather(chosen_in_order, rank, batch_dims=1)        # [B, Wm], word order

    # 80/10/10, one decision per word.
    action = tf.random.stateless_uniform([batch_size, max_words], action_seed)
    word_lengths = word_pieces.row_lengths(axis=1)
    chosen_word = tf.RaggedTensor.from_tensor(chosen_word, lengths=word_lengths)
    action = tf.RaggedTensor.from_tensor(action, lengths=word_lengths)
    piece_chosen = tf.repeat(chosen_word.flat_values, pieces_per_word.flat_values)
    piece_action = tf.repeat(action.flat_values, pieces_per_word.flat_values)
    random_index = tf.random.stateless_uniform(
        tf.shape(flat), random_seed, maxval=tf.shape(self._replacement_ids, out_type=tf.int64)[0],
        dtype=tf.int64)
    random_ids = tf.gather(self._replacement_ids, random_index)
    use_mask = piece_chosen & (piece_action < self.mask_token_rate)
    use_random = piece_chosen & (piece_action >= self.mask_token_rate) & (
        piece_action < self.mask_token_rate + self.random_token_rate)
    masked_flat = tf.where(use_mask, tf.constant(self.mask_id, tf.int64),
                           tf.where(use_random, random_ids, flat))

    text = word_pieces.merge_dims(1, 2)                                  # [B, (N)]
    chosen_ragged = text.with_flat_values(piece_chosen)
    positions = tf.ragged.range(text.row_lengths()) + 1                  # +1 for [CLS]
    masked_positions = tf.ragged.boolean_mask(positions, chosen_ragged)
    masked_ids = tf.ragged.boolean_mask(text, chosen_ragged)
    slots = [None, self.max_predictions]
    batch_size = text.nrows()
    cls = tf.fill([batch_size, 1], tf.constant(self.cls_id, tf.int64))
    sep = tf.fill([batch_size, 1], tf.constant(self.sep_id, tf.int64))
    input_word_ids = tf.concat([cls, text.with_flat_values(masked_flat), sep], axis=1)
    return {
        "input_word_ids": tf.cast(input_word_ids, tf.int32),
        "masked_lm_positions": tf.cast(masked_positions.to_tensor(0, shape=slots), tf.int32),
        "masked_lm_ids": tf.cast(masked_ids.to_tensor(0, shape=slots), tf.int32),
        "masked_lm_weights": tf.ones_like(masked_ids, tf.float32).to_tensor(0.0, shape=slots),
    }


def mask_patches(batch_size, seed, patch_mask_rate=0.1, num_patches=contract.NUM_PATCHES):
  """Chooses the masked patches of a batch (module docstring).

  Args:
    batch_size: B (int or scalar tensor).
    seed: int [2] stateless seed.
    patch_mask_rate: share of the 64 patches masked (paper: 10%).

  Returns:
    (masked_patch_positions int32 [B, M] ascending, 0-padded; masked_patch_weights float32
     [B, M]), M = ceil(64 * rate).
  """
  slots = num_patch_slots(patch_mask_rate, num_patches)
  count_seed, select_seed = _seeds(seed, 2)
  num_to_mask = _stochastic_round(
      tf.fill([batch_size], tf.constant(num_patches * patch_mask_rate, tf.float32)), count_seed)
  order = tf.argsort(tf.random.stateless_uniform([batch_size, num_patches], select_seed), axis=1)
  chosen = order[:, :slots]
  real = tf.range(slots)[None, :] < num_to_mask[:, None]
  chosen = tf.sort(tf.where(real, chosen, num_patches), axis=1)
  weights = chosen < num_patches
  positions = tf.where(weights, chosen, 0)
  return tf.cast(positions, tf.int32), tf.cast(weights, tf.float32)
