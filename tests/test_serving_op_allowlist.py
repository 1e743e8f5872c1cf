"""The TF Serving op allowlist catches the tf.text ops TF Serving lacks (serving issue #2064)."""

import os

import pytest
import tensorflow as tf
import tensorflow_text as tf_text

from fashionbert_tf.serving import op_allowlist

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red", "dress", "##es"]


def save_tokenizer_module(tmp_path, tokenizer, name):
  def tokenize(text):
    tokens = tokenizer.tokenize(text)  # [B, (words), (pieces)] classic, [B, (pieces)] fast
    if tokens.ragged_rank > 1:
      tokens = tokens.merge_dims(-2, -1)
    return tokens.to_tensor()

  module = tf.Module()
  module.tokenizer = tokenizer
  module.tokenize = tf.function(tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
  path = os.path.join(str(tmp_path), name)
  tf.saved_model.save(module, path)
  return path


def test_fast_bert_tokenizer_is_refused_and_named(tmp_path):
  path = save_tokenizer_module(
      tmp_path, tf_text.FastBertTokenizer(VOCAB, token_out_type=tf.int64,
                                          lower_case_nfd_strip_accents=True),
      "fast")
  bad = op_allowlist.disallowed_ops(path)
  assert "FastWordpieceTokenizeWithOffsets" in bad
  assert "FastBertNormalize" in bad
  # The ops sit in the function library, not in the top-level graph: the walk must go there.
  assert all(where != ["graph"] for where in bad.values())
  with pytest.raises(ValueError, match="FastBertNormalize"):
    op_allowlist.check_servable(path)


def test_classic_bert_tokenizer_passes(tmp_path):
  vocab_file = tmp_path / "vocab.txt"
  vocab_file.write_text("\n".join(VOCAB) + "\n")
  path = save_tokenizer_module(
      tmp_path, tf_text.BertTokenizer(str(vocab_file), lower_case=True, token_out_type=tf.int64),
      "classic")
  assert "WordpieceTokenizeWithOffsets" in op_allowlist.saved_model_op_types(path)
  op_allowlist.check_servable(path)


def test_python_callbacks_and_unknown_ops_are_refused():
  text_ops = op_allowlist.tensorflow_text_ops()
  assert "RegexSplitWithOffsets" in text_ops and "FastBertNormalize" in text_ops
  assert "MatMul" not in text_ops and "Any" not in text_ops
  assert op_allowlist.is_allowed("MatMul", text_ops)
  assert op_allowlist.is_allowed("WordpieceTokenizeWithOffsets", text_ops)
  for op in ("EagerPyFunc", "PyFunc", "SentencepieceOp", "TFText>RoundRobinTrim",
             "NoSuchOpAnywhere"):
    assert not op_allowlist.is_allowed(op, text_ops), op
