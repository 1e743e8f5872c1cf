"""How queries and products become vectors for the recall stage (paper 3.4, Figure 5).

The paper says only that "we vectorize the search queries and the products with FashionBERT and
then perform retrieval and ranking with nearest-neighbor search"; the authors' article adds that
the production model is "a two-tower model (parameter sharing between towers), which can
facilitate online query vector generation and offline product vector generation". How a vector is
read out of the encoder is not stated. The choices here (docs/experiments/two_stage_retrieval.md has the
measurements):

  "encoder" (`EncoderVectorizer`): one FashionBERT encoder, shared by both towers.
      query tower    `[CLS] query [SEP]`, text alone (online: no image, one short sequence);
      product tower  `[CLS] title [SEP] p_1 .. p_64` (offline: title and image patches interact,
                     so image-only attributes such as sleeves or a pocket can reach the vector),
                     or `[CLS] title [SEP]` alone (`product_input="title"`).
      vector         the masked mean of the last layer over the *text* positions (`pooling=
                     "text_mean"`; both towers then read the same kind of positions, and the
                     product's text positions have attended to its patches), or the [CLS] output
                     (`pooling="cls"`); L2-normalized, so the index's dot product is cosine.
  "tfidf" (`WordPieceTfidfVectorizer`): the cheap lexical baseline: TF-IDF over the WordPieces of
      the catalogue titles (the same tokenizer), L2-normalized. Title words only, no image.

Every vectorizer maps a list of strings (and, for products, their patch features) to float32
[N, d] unit vectors (a text with nothing to encode gets the zero vector; `zero_vectors` counts
them).
"""

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import tokenization

POOLINGS = ("text_mean", "cls")
PRODUCT_INPUTS = ("title_image", "title")


def l2_normalize(vectors):
  """float [N, d] -> float32 [N, d] unit rows (zero rows stay zero)."""
  vectors = np.asarray(vectors, np.float32)
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  return np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def zero_vectors(vectors):
  """Number of all-zero rows (texts without a known WordPiece, for TF-IDF)."""
  return int(np.sum(~np.any(np.asarray(vectors) != 0, axis=1)))


class WordPieceTfidfVectorizer:
  """TF-IDF over WordPieces, vocabulary = the pieces of the catalogue titles.

  idf(w) = ln((1 + N) / (1 + df(w))) + 1 (smoothed, as scikit-learn's default), tf = raw count;
  `[CLS]`, `[SEP]`, `[UNK]` are not counted. A query piece absent from every title has no column
  (it cannot match a title by words anyway).
  """

  name = "tfidf"

  def __init__(self, tokenizer, titles):
    """Args: tokenizer: `tokenization.FashionBertTokenizer`; titles: the catalogue's [N] titles."""
    self.tokenizer = tokenizer
    pieces = self._pieces(titles)
    vocabulary = sorted({piece for row in pieces for piece in row})
    if not vocabulary:
      raise ValueError("TF-IDF: the catalogue titles hold no known WordPiece")
    self.columns = {piece: column for column, piece in enumerate(vocabulary)}
    document_frequency = np.zeros(len(vocabulary), np.float64)
    for row in pieces:
      for piece in set(row):
        document_frequency[self.columns[piece]] += 1
    self.idf = (np.log((1.0 + len(pieces)) / (1.0 + document_frequency)) + 1.0).astype(np.float32)
    self.dim = len(vocabulary)

  def _pieces(self, texts):
    ids = self.tokenizer.tokenize(tf.constant(list(texts), tf.string)).merge_dims(1, 2)
    skip = {self.tokenizer.unk_id, self.tokenizer.cls_id, self.tokenizer.sep_id}
    return [[piece for piece in row if piece not in skip] for row in ids.to_list()]

  def _vectors(self, texts):
    rows = self._pieces(texts)
    vectors = np.zeros([len(rows), self.dim], np.float32)
    for index, row in enumerate(rows):
      for piece in row:
        column = self.columns.get(piece)
        if column is not None:
          vectors[index, column] += 1.0
    return l2_normalize(vectors * self.idf)

  def query_vectors(self, queries):
    """[Q] strings -> float32 [Q, d]."""
    return self._vectors(queries)

  def product_vectors(self, titles, patch_features=None):
    """[N] titles -> float32 [N, d] (the image is not used)."""
    del patch_features
    return self._vectors(titles)


def fashionbert_sequence_output(model, input_word_ids, input_mask, input_type_ids,
                                patch_features=None):
  """The last encoder layer of a pretrained `FashionBertModel`, inference mode.

  Without `patch_features`: the text alone (`[CLS] text [SEP]`, BertEncoderV2 with no dense
  inputs) -> float32 [B, T, H]; with them (float32 [B, 64, D]): `[CLS] text [SEP] p_1..p_64`
  -> float32 [B, T + 64, H] (`FashionBertModel.encode`). Text positions come first either way.
  """
  if patch_features is None:
    outputs = model.encoder(dict(input_word_ids=input_word_ids, input_mask=input_mask,
                                 input_type_ids=input_type_ids), training=False)
    return tf.cast(outputs["sequence_output"], tf.float32)
  return model.encode({"input_word_ids": input_word_ids, "input_mask": input_mask,
                       "input_type_ids": input_type_ids,
                       contract.FEATURES_KEY: patch_features}, training=False)["sequence_output"]


def pool(sequence_output, input_mask, pooling):
  """float32 [B, L, H] (text positions first) and int32 [B, T] -> float32 [B, H]."""
  if pooling == "cls":
    return sequence_output[:, 0, :]
  if pooling != "text_mean":
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
  text_length = tf.shape(input_mask)[1]
  mask = tf.cast(input_mask, tf.float32)[:, :, None]                     # [B, T, 1]
  text = sequence_output[:, :text_length, :]                              # [B, T, H]
  return tf.reduce_sum(text * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class EncoderVectorizer:
  """Query and product vectors from one shared encoder (module docstring).

  `sequence_output_fn(input_word_ids, input_mask, input_type_ids, patch_features or None) ->
  float32 [B, L, H]` with the text positions first: `fashionbert_sequence_output` bound to a
  pretrained model, or the fine-tuned search model's own (`search_vectorizer`).
  """

  name = "encoder"

  def __init__(self, sequence_output_fn, tokenizer, pooling="text_mean",
               product_input="title_image", batch_size=64, max_text_length=64,
               query_type_id=0, title_type_id=0):
    if pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if product_input not in PRODUCT_INPUTS:
      raise ValueError(f"product_input must be one of {PRODUCT_INPUTS}, got {product_input!r}")
    self.tokenizer = tokenizer
    self.pooling = pooling
    self.product_input = product_input
    self.batch_size = int(batch_size)
    self.max_text_length = int(max_text_length)
    self.query_type_id = int(query_type_id)
    self.title_type_id = int(title_type_id)
    self._fn = sequence_output_fn
    self._pooled = tf.function(self._pooled_batch, reduce_retracing=True)

  def _pooled_batch(self, ids, mask, types, patch_features):
    return pool(self._fn(ids, mask, types, patch_features), mask, self.pooling)

  def _encode(self, texts, type_id, patch_features=None):
    texts = list(texts)
    outputs = []
    for start in range(0, len(texts), self.batch_size):
      batch = tf.constant(texts[start:start + self.batch_size], tf.string)
      ids, mask, types = tokenization.text_to_model_inputs(self.tokenizer, batch,
                                                           self.max_text_length)
      types = types + type_id * mask
      features = None
      if patch_features is not None:
        features = tf.constant(patch_features[start:start + self.batch_size], tf.float32)
      outputs.append(self._pooled(ids, mask, types, features).numpy())
    if not outputs:
      return np.zeros([0, 0], np.float32)
    return l2_normalize(np.concatenate(outputs, axis=0))

  def query_vectors(self, queries):
    """[Q] strings -> float32 [Q, H]: `[CLS] query [SEP]` alone."""
    return self._encode(queries, self.query_type_id)

  def product_vectors(self, titles, patch_features=None):
    """[N] titles (+ float32 [N, 64, D] patch features for "title_image") -> float32 [N, H]."""
    if self.product_input == "title_image":
      if patch_features is None:
        raise ValueError("product_input 'title_image' needs the products' patch features")
      patch_features = np.asarray(patch_features, np.float32)
      if patch_features.shape[0] != len(titles):
        raise ValueError(f"{len(titles)} titles but {patch_features.shape[0]} patch feature rows")
      return self._encode(titles, self.title_type_id, patch_features)
    return self._encode(titles, self.title_type_id)


def describe(vectorizer):
  """A short label for tables: "tfidf" or "encoder[<pooling>, <product input>]"."""
  if isinstance(vectorizer, EncoderVectorizer):
    return f"encoder[{vectorizer.pooling}, {vectorizer.product_input}]"
  return vectorizer.name


def log_zero_vectors(kind, vectors):
  count = zero_vectors(vectors)
  if count:
    logging.warning("%d of %d %s vectors are zero (no WordPiece in the index vocabulary): they "
                    "score 0 against every product", count, len(vectors), kind)
  return count

