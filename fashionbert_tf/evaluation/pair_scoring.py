"""Scores many (text record, image record) pairs, each image's patch features computed once.

Work reuse (an image's patch features are computed once, not once per query it is a candidate of):
  - every distinct description is tokenized once (Fashion-Gen repeats a product's description on
    each of its poses, so texts are keyed by their string);
  - the pairs of all tasks are merged and deduplicated by content (description string, image
    record), then grouped by image; the validation
    TFRecords are streamed once, in file order, keeping only the records some pair needs as an
    image; for each step of `images_per_step` such images the backbone runs once (or the
    precomputed `patch_features` are read), and every pair of those images is scored;
  - within a step, pairs are sorted by text length and batched `batch_size` at a time, each batch
    padded only to its own longest text (variable sequence length, paper 3.4): no 512 padding.
Memory: the tokenized texts plus one step's images and features.
"""


from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import records
from fashionbert_tf.data import tokenization
from fashionbert_tf.utils import progress as progress_lib


def tokenize_texts(tokenizer, texts, max_text_length, batch_size=256):
  """Distinct strings -> dict string -> int32 [n] WordPiece ids of `[CLS] text [SEP]`."""
  token_ids = {}
  texts = list(texts)
  for start in range(0, len(texts), batch_size):
    chunk = texts[start:start + batch_size]
    ids, mask, _ = tokenization.text_to_model_inputs(tokenizer, tf.constant(chunk),
                                                     max_text_length)
    ids, lengths = ids.numpy(), mask.numpy().sum(axis=1)
    for text, row, length in zip(chunk, ids, lengths):
      token_ids[text] = row[:length].astype(np.int32)
  return token_ids


def pad_batch(token_rows):
  """List of int32 [n_i] -> (input_word_ids, input_mask, input_type_ids) int32 [B, max n_i]."""
  length = max(len(row) for row in token_rows)
  ids = np.zeros([len(token_rows), length], np.int32)
  mask = np.zeros_like(ids)
  for i, row in enumerate(token_rows):
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ids, mask, np.zeros_like(ids)


def _needed_images_dataset(file_pattern, needed_ids, precomputed, feature_dim, images_per_step,
                           records_dataset=None):
  """Dataset of (record_id [n], patch_features or image) for the records in `needed_ids`."""
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(needed_ids, tf.int64),
                                          tf.ones([len(needed_ids)], tf.int64)), 0)
  if records_dataset is not None:
    dataset = records_dataset()
  else:
    dataset = records.read_records(file_pattern, decode=False, with_patch_features=precomputed,
                                   feature_dim=feature_dim)
  dataset = dataset.filter(lambda record: table.lookup(record["record_id"]) > 0)
  if precomputed:
    dataset = dataset.map(lambda r: (r["record_id"], r[contract.FEATURES_KEY]))
  else:
    dataset = dataset.map(lambda r: (r["record_id"], records.decode_image(r["image"])),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.batch(images_per_step).prefetch(1)


def score_pairs(scorer, table, tokenizer, text_ids, image_ids, file_pattern, *,
                precomputed=False, max_text_length=contract.MAX_TEXT_LENGTH, batch_size=128,
                images_per_step=64, progress_interval=10.0, records_dataset=None):
  """P(match) of each pair (description of record text_ids[i], image of record image_ids[i]).

  Args:
    scorer: a `scoring.PairScorer`.
    table: `retrieval.RecordTable` of the validation records (descriptions by record id).
    tokenizer: from `tokenization.build_tokenizer`.
    text_ids, image_ids: int64 [N] record ids.
    file_pattern: the validation TFRecords (with `patch_features` when `precomputed`).
    precomputed: read `patch_features` from the records instead of running the backbone.
    batch_size: pairs per model call.
    images_per_step: images whose features are computed (and held) at once.
    records_dataset: optional zero-argument callable -> dataset of record dicts (`record_id`,
      encoded `image`) read instead of `file_pattern` (`tfds_source.read_records`).

  Returns:
    (float32 [N] probabilities, stats dict: pairs scored, distinct pairs, images, seconds, pairs/s).

  Raises:
    ValueError: a pair's image record is not in the TFRecords.
  """
  text_ids = np.asarray(text_ids, np.int64)
  image_ids = np.asarray(image_ids, np.int64)
  # Pairs are keyed by content: (distinct description, image record). Records whose descriptions
  # are the same string (a product's poses; look-alike products) give one pair, so equal content
  # always gets exactly the same score (ties are then real ties, counted against the ground truth).
  texts = sorted({table.description_of(rid) for rid in np.unique(text_ids)})
  text_index = {text: i for i, text in enumerate(texts)}
  text_keys = np.array([text_index[table.description_of(rid)] for rid in text_ids], np.int64)
  pairs, inverse = np.unique(np.stack([text_keys, image_ids], axis=1), axis=0,
                             return_inverse=True)
  inverse = inverse.reshape(-1)
  token_ids = tokenize_texts(tokenizer, texts, max_text_length)
  pair_tokens = [token_ids[texts[key]] for key in pairs[:, 0]]
  pair_lengths = np.array([len(t) for t in pair_tokens])

  # Pairs grouped by image record.
  order = np.argsort(pairs[:, 1], kind="stable")
  needed, starts = np.unique(pairs[order, 1], return_index=True)
  ends = np.append(starts[1:], len(order))
  pairs_of_image = {int(rid): order[s:e] for rid, s, e in zip(needed, starts, ends)}

  scores = np.full([len(pairs)], np.nan, np.float32)
  progress = progress_lib.Progress(len(pairs), progress_interval)
  feature_dim = scorer.feature_dim if precomputed else None
  logging.info("scoring %d pairs (%d distinct) over %d images and %d distinct texts",
               len(text_ids), len(pairs), len(needed), len(token_ids))
  seen = 0
  for record_ids, pixels_or_features in _needed_images_dataset(
      file_pattern, needed, precomputed, feature_dim, images_per_step, records_dataset):
    features = pixels_or_features if precomputed else scorer.patch_features(pixels_or_features)
    record_ids = record_ids.numpy()
    seen += len(record_ids)
    step_pairs = np.concatenate([pairs_of_image[int(rid)] for rid in record_ids])
    step_local = np.concatenate([np.full(len(pairs_of_image[int(rid)]), i)
                                 for i, rid in enumerate(record_ids)])
    by_length = np.argsort(pair_lengths[step_pairs], kind="stable")
    step_pairs, step_local = step_pairs[by_length], step_local[by_length]
    for start in range(0, len(step_pairs), batch_size):
      batch_pairs = step_pairs[start:start + batch_size]
      ids, mask, types = pad_batch([pair_tokens[p] for p in batch_pairs])
      batch_features = tf.gather(features, step_local[start:start + batch_size])
      scores[batch_pairs] = scorer.match_probability(ids, mask, types, batch_features)
      progress.update(len(batch_pairs))
    if seen == len(needed):   # every needed image scored: do not stream the rest of the files
      break
  if seen != len(needed):
    missing = sorted(set(needed.tolist()) - set(pairs[~np.isnan(scores), 1].tolist()))[:5]
    raise ValueError(f"{file_pattern}: {len(needed) - seen} image record(s) needed by the "
                     f"evaluation are not in the TFRecords (e.g. record_id {missing})")
  stats = {"pairs": int(len(text_ids)), "distinct_pairs": int(len(pairs)),
           "images": int(len(needed)), "texts": int(len(token_ids)),
           "seconds": float(progress.seconds), "pairs_per_second": float(progress.pairs_per_second)}
  logging.info("scored %d distinct pairs in %.1f s (%.1f pairs/s)", len(pairs), stats["seconds"],
               stats["pairs_per_second"])
  return scores[inverse], stats
