"""Whole-word and patch masking statistics over thousands of examples (paper 2.2)."""

import numpy as np
import pytest
import tensorflow as tf

from fashionbert_tf.data import masking

VOCAB_SIZE = 1000
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4


def _random_texts(num_texts, rng):
  """RaggedTensor [B, (words), (pieces)] of random ids >= 10 (1-4 pieces per word), some [UNK]s."""
  texts = []
  for _ in range(num_texts):
    words = []
    for _ in range(int(rng.integers(3, 40))):
      if rng.random() < 0.03:
        words.append([UNK])
      else:
        words.append(rng.integers(10, VOCAB_SIZE, size=int(rng.integers(1, 5))).tolist())
    texts.append(words)
  flat = [piece for words in texts for word in words for piece in word]
  word_lengths = [len(word) for words in texts for word in words]
  text_lengths = [len(words) for words in texts]
  ragged = tf.RaggedTensor.from_nested_row_lengths(
      tf.constant(flat, tf.int64), [text_lengths, word_lengths])
  return ragged, texts


def _masker(max_predictions=64, **kwargs):
  return masking.WholeWordMasker(VOCAB_SIZE, CLS, SEP, MASK, [PAD, UNK], max_predictions,
                                 **kwargs)


@pytest.fixture(scope="module")
def masked_sample():
  rng = np.random.default_rng(0)
  word_pieces, texts = _random_texts(3000, rng)
  out = _masker()(word_pieces, tf.constant([7, 11], tf.int64))
  return texts, {key: (value.to_list() if isinstance(value, tf.RaggedTensor) else value.numpy())
                 for key, value in out.items()}


def _word_spans(words):
  """[(first position, last position + 1)] of each word in `[CLS] pieces [SEP]`."""
  spans, position = [], 1
  for word in words:
    spans.append((position, position + len(word)))
    position += len(word)
  return spans


def test_whole_words_selected_at_the_configured_rate_and_never_partly(masked_sample):
  texts, out = masked_sample
  selected_words = maskable_words = 0
  for i, words in enumerate(texts):
    positions = set(out["masked_lm_positions"][i][out["masked_lm_weights"][i] > 0].tolist())
    for word, (start, stop) in zip(words, _word_spans(words)):
      covered = [p in positions for p in range(start, stop)]
      assert all(covered) or not any(covered), (i, word, covered)   # never partly masked
      if word != [UNK]:
        maskable_words += 1
        selected_words += all(covered)
      else:
        assert not any(covered)                                     # specials never masked
    flat = [p for w in words for p in w]
    assert 0 not in positions and len(flat) + 1 not in positions    # [CLS], [SEP] never
  rate = selected_words / maskable_words
  assert abs(rate - 0.15) < 0.01, rate


def test_80_10_10_replacement_and_labels(masked_sample):
  texts, out = masked_sample
  mask = random = unchanged = 0
  for i, words in enumerate(texts):
    flat = [CLS] + [p for w in words for p in w] + [SEP]
    ids = out["input_word_ids"][i]
    assert len(ids) == len(flat) and ids[0] == CLS and ids[-1] == SEP
    weights = out["masked_lm_weights"][i]
    for position, label in zip(out["masked_lm_positions"][i][weights > 0],
                               out["masked_lm_ids"][i][weights > 0]):
      assert label == flat[position]                     # the label is the original id
      if ids[position] == MASK:
        mask += 1
      elif ids[position] == flat[position]:
        unchanged += 1
      else:
        random += 1
        assert ids[position] >= 5                        # random ids are never special tokens
    masked = set(out["masked_lm_positions"][i][weights > 0].tolist())
    for position, (original, new) in enumerate(zip(flat, ids)):
      if position not in masked:
        assert original == new                           # unmasked positions untouched
  total = mask + random + unchanged
  assert total > 5000
  assert abs(mask / total - 0.8) < 0.03
  assert abs(random / total - 0.1) < 0.02
  assert abs(unchanged / total - 0.1) < 0.02


def test_prediction_slots_cap_whole_words_and_padding():
  rng = np.random.default_rng(1)
  word_pieces, texts = _random_texts(500, rng)
  out = _masker(max_predictions=3, word_mask_rate=0.5)(word_pieces, tf.constant([1, 2]))
  weights = out["masked_lm_weights"].numpy()
  positions = out["masked_lm_positions"].numpy()
  assert weights.shape == (500, 3) and weights.sum(1).max() <= 3
  for i, words in enumerate(texts):
    chosen = set(positions[i][weights[i] > 0].tolist())
    for start, stop in _word_spans(words):
      covered = [p in chosen for p in range(start, stop)]
      assert all(covered) or not any(covered)
    assert (positions[i][weights[i] == 0] == 0).all()


def test_masking_is_seeded():
  word_pieces, _ = _random_texts(50, np.random.default_rng(2))
  masker = _masker()
  first = masker(word_pieces, tf.constant([5, 6]))
  again = masker(word_pieces, tf.constant([5, 6]))
  other = masker(word_pieces, tf.constant([5, 7]))
  np.testing.assert_array_equal(first["masked_lm_positions"], again["masked_lm_positions"])
  assert not np.array_equal(first["masked_lm_positions"], other["masked_lm_positions"])


def test_patch_mask_rate_positions_and_weights():
  positions, weights = masking.mask_patches(5000, tf.constant([3, 4]), 0.1)
  positions, weights = positions.numpy(), weights.numpy()
  assert positions.shape == (5000, 7) and weights.shape == (5000, 7)
  assert abs(weights.sum() / (5000 * 64) - 0.1) < 0.003
  assert set(weights.sum(1).tolist()) == {6.0, 7.0}
  for row_positions, row_weights in zip(positions, weights):
    real = row_positions[row_weights > 0]
    assert len(set(real.tolist())) == len(real)                   # distinct patches
    assert real.min() >= 0 and real.max() < 64
    assert (row_positions[row_weights == 0] == 0).all()
  # Every patch is masked about equally often.
  counts = np.bincount(positions[weights > 0], minlength=64)
  assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()
