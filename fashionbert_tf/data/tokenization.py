"""WordPiece tokenization shared by training, evaluation and serving.

Paper 2.2 ("Text Representation"): the text is WordPiece-tokenized with the BERT vocabulary and
processed the standard BERT way, `[CLS] text [SEP]`. The tokenizer is the classic
`tensorflow_text.BertTokenizer` (not FastBertTokenizer: TF Serving's model server has no Fast* ops),
built from `data.vocab_file` (empty -> the BERT uncased `vocab.txt` of the offline MiniLM default).
The vocabulary table is initialized from that *file* (tf.text's own file-backed table, id = line
number, one OOV bucket), so a SavedModel that tracks the tokenizer saves the file as an asset
(`assets/vocab.txt`) rather than the whole vocabulary as a graph constant; training, evaluation and
serving use this one tokenizer.

Truncation rule (paper 3.1: at most 448 text positions including the specials): a text longer than
`max_text_length - 2` WordPieces keeps its leading whole words that fit; a word is never cut in the
middle. `count_truncated` counts how many texts the rule shortens (the pipeline logs it).
"""

import tensorflow as tf
import tensorflow_text as tf_text

from fashionbert_tf.data import contract
from fashionbert_tf.utils import default_assets

CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)


def resolve_vocab_file(data_config):
  """`data.vocab_file`, or the MiniLM default when empty. Missing file -> FileNotFoundError."""
  vocab_file = data_config.vocab_file or default_assets.default_vocab_file()
  if not tf.io.gfile.exists(vocab_file):
    raise FileNotFoundError(f"WordPiece vocabulary not found: {vocab_file} (data.vocab_file)")
  return vocab_file


def read_vocab(vocab_file):
  """List of WordPieces, one per line (id = line number)."""
  with tf.io.gfile.GFile(vocab_file, "r") as handle:
    return [line.rstrip("\n").strip() for line in handle]


class FashionBertTokenizer(tf_text.BertTokenizer):
  """A `tensorflow_text.BertTokenizer` that also knows its special-token ids and vocab size.

  Attributes (Python ints): `vocab_size`, `cls_id`, `sep_id`, `mask_id`, `pad_id`, `unk_id`.
  `tokenize(texts [B]) -> int64 RaggedTensor [B, (words), (wordpieces)]` as in BertTokenizer.
  """

  def __init__(self, vocab_file, lower_case=True):
    vocab = read_vocab(vocab_file)
    ids = {token: index for index, token in enumerate(vocab)}
    if len(ids) != len(vocab):
      seen, duplicates = set(), []
      for line, token in enumerate(vocab):
        if token in seen:
          duplicates.append(f"{token!r} (line {line + 1})")
        seen.add(token)
      raise ValueError(f"vocabulary {vocab_file} has duplicate entries: {duplicates[:5]}")
    missing = [token for token in SPECIAL_TOKENS if token not in ids]
    if missing:
      raise ValueError(f"vocabulary {vocab_file} lacks the special token(s) {missing}")
    # A path: tf.text builds a table initialized from the file (an asset when saved).
    super().__init__(vocab_file, token_out_type=tf.int64, lower_case=lower_case,
                     unknown_token=UNK_TOKEN)
    self.vocab_file = vocab_file
    self.vocab_size = len(vocab)
    self.cls_id = ids[CLS_TOKEN]
    self.sep_id = ids[SEP_TOKEN]
    self.mask_id = ids[MASK_TOKEN]
    self.pad_id = ids[PAD_TOKEN]
    self.unk_id = ids[UNK_TOKEN]


def build_tokenizer(data_config):
  """The tokenizer of `data_config` (vocab_file, lower_case)."""
  return FashionBertTokenizer(resolve_vocab_file(data_config), data_config.lower_case)


def tokenize_words(tokenizer, texts):
  """texts string [B] -> int64 RaggedTensor [B, (words), (wordpieces)], no specials."""
  return tokenizer.tokenize(texts)


def truncate_whole_words(word_pieces, max_pieces):
  """Keeps each row's leading whole words whose WordPieces fit in `max_pieces`.

  Args:
    word_pieces: RaggedTensor [B, (words), (wordpieces)].
    max_pieces: int, WordPieces allowed per row (max_text_length - 2 for [CLS] and [SEP]).

  Returns:
    (truncated RaggedTensor [B, (words'), (wordpieces)], bool [B] True where words were dropped).
  """
  pieces_per_word = word_pieces.row_lengths(axis=2)                   # [B, (words)]
  pieces_before_end = tf.math.cumsum(pieces_per_word, axis=1)        # ragged cumsum
  keep = pieces_before_end <= max_pieces
  truncated = tf.ragged.boolean_mask(word_pieces, keep)
  was_truncated = tf.reduce_any(tf.logical_not(keep), axis=1)
  return truncated, was_truncated


def count_truncated(tokenizer, texts, max_text_length=contract.MAX_TEXT_LENGTH):
  """Number of `texts` the truncation rule shortens (more than max_text_length - 2 WordPieces)."""
  pieces = tokenizer.tokenize(texts).merge_dims(1, 2)
  return int(tf.reduce_sum(tf.cast(pieces.row_lengths() > max_text_length - 2, tf.int32)))


def add_special_tokens(pieces, cls_id, sep_id):
  """int RaggedTensor [B, (n)] -> [B, (n + 2)] as `[CLS] pieces [SEP]`."""
  batch = pieces.nrows()
  cls = tf.fill([batch, 1], tf.cast(cls_id, pieces.dtype))
  sep = tf.fill([batch, 1], tf.cast(sep_id, pieces.dtype))
  return tf.concat([cls, pieces, sep], axis=1)


def text_to_model_inputs(tokenizer, texts, max_text_length=contract.MAX_TEXT_LENGTH):
  """Unmasked model text inputs for a batch of raw texts.

  Args:
    tokenizer: a `FashionBertTokenizer` (`build_tokenizer`).
    texts: string [B].
    max_text_length: T limit including [CLS] and [SEP] (paper: 448); longer texts are truncated
      by whole words (module docstring).

  Returns:
    (input_word_ids, input_mask, input_type_ids), each int32 [B, T], T = the batch's longest
    `[CLS] text [SEP]`, 0-padded; input_type_ids all 0 (segment "T").
  """
  if max_text_length > contract.MAX_TEXT_LENGTH or max_text_length < 3:
    raise ValueError(f"max_text_length must be in [3, {contract.MAX_TEXT_LENGTH}], "
                     f"got {max_text_length}")
  texts = tf.convert_to_tensor(texts, tf.string)
  word_pieces, _ = truncate_whole_words(tokenizer.tokenize(texts), max_text_length - 2)
  ids = add_special_tokens(word_pieces.merge_dims(1, 2), tokenizer.cls_id, tokenizer.sep_id)
  input_word_ids = tf.cast(ids.to_tensor(0), tf.int32)
  input_mask = tf.cast(tf.ones_like(ids, tf.int32).to_tensor(0), tf.int32)
  return input_word_ids, input_mask, tf.zeros_like(input_word_ids)
