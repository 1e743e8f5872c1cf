"""Text -> model inputs inside the exported graph, through the data side's tokenization.

BRIEF contract 3: `fashionbert_tf/data/tokenization.py` defines tokenization (classic
`tensorflow_text.BertTokenizer`, `[CLS] text [SEP]`, whole-word truncation to 448 positions) and
`text_to_model_inputs`; serving calls that same function, so serving, evaluation and training
tokenize identically.

One difference, for the SavedModel only: `tokenization.FashionBertTokenizer` holds its vocabulary
in an in-memory table (the whole vocabulary becomes a constant inside `saved_model.pb`). The
serving tokenizer is the same classic `BertTokenizer` with the same settings (lower_case,
`[UNK]`, int64 ids, a StaticVocabularyTable with one OOV bucket) built from the vocabulary *file*,
so the file is saved as a SavedModel asset (`assets/vocab.txt`) and the table is initialized from
it when TF Serving loads the model. Tests check both give the same ids and the same probabilities.
"""

import tensorflow as tf
import tensorflow_text as tf_text

from fashionbert_tf.data import tokenization


def build_serving_tokenizer(data_config):
  """Classic BertTokenizer over `data.vocab_file` (an asset when saved).

  Raises:
    FileNotFoundError: the vocabulary file does not exist.
    ValueError: it lacks a special token ([PAD], [UNK], [CLS], [SEP], [MASK]).
  """
  vocab_file = tokenization.resolve_vocab_file(data_config)
  tokenization.FashionBertTokenizer(vocab_file, data_config.lower_case)  # validates the vocab
  return tf_text.BertTokenizer(vocab_file, token_out_type=tf.int64,
                               lower_case=data_config.lower_case,
                               unknown_token=tokenization.UNK_TOKEN)


def vocab_size(data_config):
  """Number of WordPieces in the vocabulary."""
  return len(tokenization.read_vocab(tokenization.resolve_vocab_file(data_config)))


def text_to_model_inputs(tokenizer, texts, max_text_length):
  """string [B] -> (input_word_ids, input_mask, input_type_ids) int32 [B, T] (contract 3)."""
  return tokenization.text_to_model_inputs(tokenizer, texts, max_text_length)
