"""The Q / T / I input layout of search fine-tuning (paper 3.4, Figure 6).

Sequence: `[CLS] query [SEP] title [SEP] p_1 .. p_64`; the text part comes from
`QueryTitleEncoder.encode`, the 64 patches are appended by the model (as in pretraining, their
segment embedding is added by the patch embedding).

Segment ids ("Q", "T", "I"; the paper's Figure 6, after VL-BERT's VQA fine-tuning):
  fashionbert       Q = 0, I = 1, T = 2. Q and I keep the rows the pretraining checkpoint trained
                    (0 = text, 1 = image); T is the third row added for fine-tuning
                    (`search.title_segment_init`: a copy of the text row by default, so the title
                    starts where pretraining's text did and learns to differ from the query).
  oribert, bert_img Q = 0, T = 1: BERT's own sentence-pair segments A / B of a 2-row table (the
                    text-only encoder never sees patches).
`[CLS]` and the first `[SEP]` take the query's segment, the title's `[SEP]` the title's, as BERT
does for sentence pairs.

Variable sequence length (VSL, paper 3.4): with `pad_to=None` the text is padded only to the
batch's longest `[CLS] q [SEP] t [SEP]` and the patches follow directly (one query: no padding at
all). `pad_to=448` gives the padded layout the paper compares against: the text padded to the
pretraining maximum (448) before the 64 patches, 512 positions. Padded text positions are masked
out of attention, so both layouts give the same P(click) up to float round-off; only the cost
differs.

Truncation: the query keeps its leading whole words within `max_query_length` WordPieces, the title
within `max_title_length` (`tokenization.truncate_whole_words`).
"""

import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import tokenization

QUERY_SEGMENT_ID = 0
IMAGE_SEGMENT_ID = 1   # the pretraining image row (patch_embedding.IMAGE_SEGMENT_ID)
FASHIONBERT_TITLE_SEGMENT_ID = 2
TEXT_ONLY_TITLE_SEGMENT_ID = 1
PADDED_TEXT_LENGTH = contract.MAX_TEXT_LENGTH   # 448: the non-VSL layout pads the text to it


def title_segment_id(variant):
  """The title's segment id for `variant` (see the module docstring)."""
  return FASHIONBERT_TITLE_SEGMENT_ID if variant == "fashionbert" else TEXT_ONLY_TITLE_SEGMENT_ID


def type_vocab_size(variant):
  """Rows of the segment embedding table the variant needs: 3 (Q, I, T) or 2 (Q, T)."""
  return 3 if variant == "fashionbert" else 2


def uses_image(variant):
  return variant in ("fashionbert", "bert_img")


class QueryTitleEncoder:
  """Raw query and title strings -> the model's text inputs `[CLS] q [SEP] t [SEP]`."""

  def __init__(self, tokenizer, max_query_length, max_title_length, title_segment):
    """Args:
      tokenizer: `tokenization.FashionBertTokenizer`.
      max_query_length, max_title_length: WordPiece budgets (specials not counted).
      title_segment: the title's segment id (`title_segment_id(variant)`).
    """
    self.tokenizer = tokenizer
    self.max_query_length = int(max_query_length)
    self.max_title_length = int(max_title_length)
    self.title_segment = int(title_segment)
    if self.max_query_length + self.max_title_length + 3 > PADDED_TEXT_LENGTH:
      raise ValueError(f"max_query_length + max_title_length + 3 must be <= {PADDED_TEXT_LENGTH}")

  def _pieces(self, texts, max_pieces):
    texts = tf.convert_to_tensor(texts, tf.string)
    word_pieces, _ = tokenization.truncate_whole_words(self.tokenizer.tokenize(texts), max_pieces)
    return tf.cast(word_pieces.merge_dims(1, 2), tf.int32)   # ragged [B, (n)]

  def encode(self, queries, titles, pad_to=None):
    """Text inputs for a batch of (query, title) pairs.

    Args:
      queries, titles: string sequences / tensors [B].
      pad_to: None = pad to the batch's longest (VSL); an int L = pad every row to L positions.

    Returns:
      dict of int32 [B, T]: `input_word_ids` (0-padded), `input_mask` (1 = real token),
      `input_type_ids` (Q for `[CLS] q [SEP]`, the title segment for `t [SEP]`, 0 on padding).
    """
    query = self._pieces(queries, self.max_query_length)
    title = self._pieces(titles, self.max_title_length)
    batch = query.nrows()
    cls = tf.fill([batch, 1], tf.constant(self.tokenizer.cls_id, tf.int32))
    sep = tf.fill([batch, 1], tf.constant(self.tokenizer.sep_id, tf.int32))
    ids = tf.concat([cls, query, sep, title, sep], axis=1)
    query_part = tf.concat([cls, query, sep], axis=1)
    title_part = tf.concat([title, sep], axis=1)
    types = tf.concat([tf.zeros_like(query_part) + QUERY_SEGMENT_ID,
                       tf.zeros_like(title_part) + self.title_segment], axis=1)
    shape = None if pad_to is None else [None, int(pad_to)]
    if pad_to is not None:
      longest = int(tf.reduce_max(ids.row_lengths()))
      if longest > pad_to:
        raise ValueError(f"pad_to={pad_to} is shorter than the longest text ({longest})")
    return {
        "input_word_ids": ids.to_tensor(0, shape=shape),
        "input_mask": tf.ones_like(ids).to_tensor(0, shape=shape),
        "input_type_ids": types.to_tensor(0, shape=shape),
    }


def full_segment_ids(input_type_ids, with_image):
  """The segment id of every sequence position: int32 [B, T + 64] (image) or [B, T].

  The model's own view of `[CLS] q [SEP] t [SEP] p_1 .. p_64`: the text's ids followed by the image
  segment for the 64 patches (what the patch embedding adds). For inspection and tests.
  """
  input_type_ids = tf.convert_to_tensor(input_type_ids, tf.int32)
  if not with_image:
    return input_type_ids
  batch = tf.shape(input_type_ids)[0]
  patches = tf.fill([batch, contract.NUM_PATCHES], IMAGE_SEGMENT_ID)
  return tf.concat([input_type_ids, patches], axis=1)


def sequence_length(text_inputs, with_image):
  """Positions the encoder attends over for these inputs: T (+ 64 with the image)."""
  length = int(text_inputs["input_word_ids"].shape[1])
  return length + (contract.NUM_PATCHES if with_image else 0)
