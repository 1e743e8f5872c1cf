"""The `tf.Module` exported for TF Serving from a fine-tuned search model (paper 3.4, Figure 6).

Signatures of the image variants (fashionbert, bert_img):
  serving_default
    query  string [B]   the shopper's query (UTF-8)
    title  string [B]   the product title
    image  string [B]   encoded JPEG/PNG/BMP/GIF (first frame), any size, resized to 256x256
    -> click_probability float32 [B]   P(click | query, title, image) = softmax(click_logits)[:, 1]
    Tokenization into `[CLS] query [SEP] title [SEP]` with segments Q / T (`search/layout.py`, the
    query and title WordPiece budgets of the run) and image decoding run inside the graph.
  score_features
    input_word_ids, input_mask, input_type_ids  int32 [B, T]   the layout's text, T <= 448
    patch_features                              float32 [B, 64, D]   precomputed patch features
    -> click_probability float32 [B]
The text-only variant (oribert) has the same two signatures without `image` / `patch_features`.
Also saved (image variants, not a serving signature): compute_patch_features(image uint8
[B, 256, 256, 3]) -> float32 [B, 64, D], for computing a catalogue's features offline.

Variable sequence length (paper 3.4): a batch is padded only to its longest `[CLS] q [SEP] t [SEP]`
and the 64 patches follow it; nothing is padded to 512.

Bad requests fail with InvalidArgumentError naming the problem: an empty or whitespace-only query
or title, undecodable or empty image bytes, fields of different batch sizes, token ids outside the
vocabulary, segment ids the layout does not use, mask values other than 0 / 1, a row without any
real token, a text longer than 448 positions, non-finite patch features.
"""

import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.search import click_model as search_model_lib
from fashionbert_tf.search import layout
from fashionbert_tf.serving import serving_module
from fashionbert_tf.utils import untracked

OUTPUT_KEY = "click_probability"


def _non_empty(name, text):
  stripped_length = tf.strings.length(tf.strings.strip(text))
  return tf.debugging.Assert(
      tf.reduce_all(stripped_length > 0),
      [f"request field `{name}`: empty or whitespace-only text at batch positions",
       tf.reshape(tf.where(stripped_length <= 0), [-1])])


class SearchServingModule(tf.Module):
  """Tracks the search model's variables and the tokenizer; its tf.functions are the signatures.

  As `serving_module.FashionBertServingModule`: the Keras model is held untracked and only its
  variables are tracked (no Keras SavedModel tracing of every layer).
  """

  def __init__(self, model, text_encoder, feature_dim=None, name="fashionbert_search_serving"):
    """Args:
      model: a `search.model.SearchModel` (weights restored).
      text_encoder: `search.layout.QueryTitleEncoder` of the run (its tokenizer is tracked: the
        vocabulary is saved as an asset).
      feature_dim: D, the patch feature size (image variants).
    """
    super().__init__(name=name)
    self._model = untracked.Untracked(model)
    self.model_variables = list(model.variables)
    self.text_encoder = text_encoder
    self.tokenizer = text_encoder.tokenizer
    self.vocab_size = int(self.tokenizer.vocab_size)
    self.uses_image = bool(model.uses_image)
    self.variant = model.variant
    # A string and a tuple: a list attribute would be tracked (ListWrapper) by tf.Module.
    self.allowed_type_ids = tuple(sorted({layout.QUERY_SEGMENT_ID, text_encoder.title_segment}))
    self._allowed_type_ids_text = str(list(self.allowed_type_ids))
    text_specs = [tf.TensorSpec([None], tf.string, name="query"),
                  tf.TensorSpec([None], tf.string, name="title")]
    feature_specs = [tf.TensorSpec([None, None], tf.int32, name=key) for key in contract.TEXT_KEYS]
    if self.uses_image:
      if not feature_dim:
        raise ValueError("an image search variant needs feature_dim")
      self.feature_dim = int(feature_dim)
      text_specs.append(tf.TensorSpec([None], tf.string, name="image"))
      feature_specs.append(tf.TensorSpec([None, contract.NUM_PATCHES, self.feature_dim],
                                         tf.float32, name=contract.FEATURES_KEY))
      self.compute_patch_features = tf.function(
          self._compute_patch_features, autograph=False,
          input_signature=[tf.TensorSpec([None, contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3],
                                         tf.uint8, name=contract.IMAGE_KEY)])
    self.serve = tf.function(self._serve, autograph=False, input_signature=text_specs)
    self.score_features = tf.function(self._score_features, autograph=False,
                                      input_signature=feature_specs)

  @property
  def model(self):
    return self._model.value

  def signatures(self):
    """The serving signatures, for `tf.saved_model.save(..., signatures=...)`.

    The tf.functions themselves (they have input signatures), not concrete functions traced
    beforehand: saving retraces those, so the SavedModel would hold every function twice (twice
    the graph constants of a bfloat16 export, measured).
    """
    return {"serving_default": self.serve, "score_features": self.score_features}

  def function_aliases(self):
    return {"compute_patch_features": self.compute_patch_features} if self.uses_image else {}

  # ---- the functions -----------------------------------------------------------------------------

  def _compute_patch_features(self, image):
    return tf.cast(self.model.patch_feature_extractor(image, training=False), tf.float32)

  def _score(self, inputs):
    probability = search_model_lib.click_probability(self.model(inputs, training=False))
    return {OUTPUT_KEY: tf.identity(probability, name=OUTPUT_KEY)}

  def _serve(self, query, title, image=None):
    checks = [
        tf.debugging.assert_equal(
            tf.size(query), tf.size(title),
            message="request fields `query` and `title` must have the same batch size"),
        _non_empty("query", query), _non_empty("title", title)]
    if image is not None:
      checks.append(tf.debugging.assert_equal(
          tf.size(query), tf.size(image),
          message="request fields `query` and `image` must have the same batch size"))
    with tf.control_dependencies(checks):
      query = tf.identity(query)
      title = tf.identity(title)
    inputs = self.text_encoder.encode(query, title)
    if image is not None:
      images = tf.map_fn(serving_module.decode_image, image,
                         fn_output_signature=tf.TensorSpec(
                             [contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3], tf.uint8))
      inputs[contract.FEATURES_KEY] = self._compute_patch_features(images)
    return self._score(inputs)

  def _score_features(self, input_word_ids, input_mask, input_type_ids, patch_features=None):
    type_ok = tf.zeros_like(input_type_ids, tf.bool)
    for type_id in self.allowed_type_ids:
      type_ok |= tf.equal(input_type_ids, type_id)
    checks = serving_module.text_input_checks(input_word_ids, input_mask, input_type_ids,
                                              contract.MAX_TEXT_LENGTH, self.vocab_size)
    checks.append(tf.debugging.Assert(
        tf.reduce_all(type_ok),
        [f"score_features: input_type_ids values must be in {self._allowed_type_ids_text} "
         f"(query, title segments of the {self.variant} layout)"]))
    inputs = {"input_word_ids": input_word_ids, "input_mask": input_mask,
              "input_type_ids": input_type_ids}
    if patch_features is not None:
      checks += [
          tf.debugging.assert_equal(
              tf.shape(patch_features)[0], tf.shape(input_word_ids)[0],
              message="score_features: patch_features and input_word_ids batch sizes differ"),
          tf.debugging.assert_all_finite(
              patch_features, message="score_features: patch_features holds NaN or Inf")]
      inputs[contract.FEATURES_KEY] = patch_features
    with tf.control_dependencies(checks):
      inputs["input_word_ids"] = tf.identity(input_word_ids)
    return self._score(inputs)
