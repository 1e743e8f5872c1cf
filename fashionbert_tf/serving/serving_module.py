"""The `tf.Module` exported for TF Serving: FashionBERT's match probability behind two signatures.

Signatures (see fashionbert_tf/serving/README.md for `saved_model_cli show --all`):
  serving_default
    text   string [B]   raw product description (UTF-8)
    image  string [B]   encoded JPEG/PNG/BMP/GIF (first frame) image; any size, resized to 256x256
    -> match_probability float32 [B]
    Tokenization (classic tf.text BertTokenizer, the vocabulary saved as an asset) and image
    decoding run inside the graph.
  score_features
    input_word_ids, input_mask, input_type_ids  int32 [B, T]   `[CLS] text [SEP]`, T <= 448
    patch_features                              float32 [B, 64, D]   precomputed patch features
    -> match_probability float32 [B]
Also saved (callable after `tf.saved_model.load`, not a serving signature):
  compute_patch_features(image uint8 [B, 256, 256, 3]) -> float32 [B, 64, D] (evaluation reuse).

Variable sequence length (paper 3.4, Table 4): the encoder sees T + 64 positions with T the batch's
own longest text, never a sequence padded to 512. With `length_bucket` = k > 0 (set for XLA
exports), T is rounded up to a multiple of k (padding masked out) so that XLA compiles a few
shapes, not one per length.

Precision and compilation (`fashionbert export --precision --jit_compile`): the module scores with
whatever model it is given; a bfloat16 export gets `fused_inference.FusedScoringModel` (bfloat16
matmul kernels as graph constants, float32 LayerNorm / softmax / P(match); its variables are the
word embedding table, the biases and the patch backbone, and under XLA the kernels). With
`jit_compile` the
encoder + TIA head run as one XLA-compiled function (`_XlaMustCompile`) called by each signature;
the request checks stay outside it (XLA cannot compile `Assert`). TF Serving runs such a function
only with `--xla_cpu_compilation_enabled=true` (see fashionbert_tf/serving/README.md).

Bad requests fail with InvalidArgumentError naming the problem (TF Serving returns it as the
request's error status): empty or whitespace-only text, undecodable or empty image bytes, text and
image batches of different sizes, token ids outside the vocabulary, a row without any real token,
a text longer than 448 positions, non-finite patch features. Wrong dtypes or shapes are refused by
the signature itself. So no request yields NaN.
"""

import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import tokenization
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.utils import untracked

OUTPUT_KEY = "match_probability"


def decode_image(encoded):
  """Encoded image bytes (scalar string) -> uint8 [256, 256, 3].

  Decodes JPEG/PNG/BMP/GIF with 3 channels (grayscale is expanded, alpha dropped); an image of
  another size is resized (bilinear, antialiased) to 256x256, the size the model was trained on.
  """
  checks = [tf.debugging.assert_greater(
      tf.strings.length(encoded), 0, message="request field `image`: empty image bytes")]
  with tf.control_dependencies(checks):
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
  image.set_shape([None, None, 3])
  size = contract.IMAGE_SIZE
  has_model_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], [size, size]))

  def resized():
    pixels = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)

  image = tf.cond(has_model_size, lambda: image, resized)
  image.set_shape([size, size, 3])
  return image


def text_input_checks(input_word_ids, input_mask, input_type_ids, max_text_length, vocab_size):
  """The `score_features` assertions on the text inputs that every serving module makes.

  Args:
    input_word_ids, input_mask, input_type_ids: int32 [B, T] (mask and type ids must have the shape
      of input_word_ids).
    max_text_length: the largest T the model accepts.
    vocab_size: word ids must lie in [0, vocab_size).

  Returns:
    A list of assertion ops (shapes, T <= max_text_length, ids in the vocabulary, mask values 0 / 1,
    a real token in every row); the caller adds its own (type ids, patch features) and runs them
    as control dependencies.
  """
  return [
      tf.debugging.assert_equal(
          tf.shape(input_mask), tf.shape(input_word_ids),
          message="score_features: input_mask must have the shape of input_word_ids [B, T]"),
      tf.debugging.assert_equal(
          tf.shape(input_type_ids), tf.shape(input_word_ids),
          message="score_features: input_type_ids must have the shape of input_word_ids [B, T]"),
      tf.debugging.assert_less_equal(
          tf.shape(input_word_ids)[1], max_text_length,
          message=f"score_features: text longer than {max_text_length} positions"),
      tf.debugging.Assert(
          tf.reduce_all((input_word_ids >= 0) & (input_word_ids < vocab_size)),
          [f"score_features: input_word_ids outside the vocabulary [0, {vocab_size})"]),
      tf.debugging.Assert(
          tf.reduce_all(tf.equal(input_mask, 0) | tf.equal(input_mask, 1)),
          ["score_features: input_mask values must be 0 or 1"]),
      tf.debugging.Assert(
          tf.reduce_all(tf.reduce_max(input_mask, axis=1) > 0),
          ["score_features: a row of input_mask has no real token"]),
  ]


class FashionBertServingModule(tf.Module):
  """Tracks the model's variables and the tokenizer; its tf.functions become the signatures.

  The Keras model itself is held untracked and only its variables are tracked: saving a tracked
  tf_keras model also traces every layer's Keras SavedModel functions, which TF Serving never uses
  and which make an export several times slower. The saved functions capture the same variables.
  """

  def __init__(self, model, tokenizer, feature_dim, vocab_size,
               max_text_length=contract.MAX_TEXT_LENGTH, jit_compile=False, length_bucket=0,
               name="fashionbert_serving"):
    """Args:
      model: a `FashionBertModel` (weights restored).
      tokenizer: `tokenization.FashionBertTokenizer` (a classic BertTokenizer; tracked: its
        vocabulary file is saved as a SavedModel asset).
      feature_dim: D, the patch feature size.
      vocab_size: number of WordPieces; `score_features` refuses ids outside [0, vocab_size).
      max_text_length: longest text in positions, `[CLS]` and `[SEP]` included (paper: 448).
      jit_compile: score through one XLA-compiled function (see the module docstring).
      length_bucket: k > 0 pads T up to a multiple of k before scoring; 0 = exact VSL.
    """
    super().__init__(name=name)
    self._model = untracked.Untracked(model)
    self.model_variables = list(model.variables)
    self.tokenizer = tokenizer
    self.feature_dim = int(feature_dim)
    self.vocab_size = int(vocab_size)
    self.max_text_length = int(max_text_length)
    self.jit_compile = bool(jit_compile)
    self.length_bucket = int(length_bucket)
    # The encoder + TIA head; its own function so that XLA compiles it without the request checks.
    self._match_probability = tf.function(
        lambda ids, mask, types, features: scoring.model_match_probability(
            self.model, ids, mask, types, features),
        autograph=False, jit_compile=self.jit_compile,
        input_signature=scoring.text_signature() + [scoring.features_signature(self.feature_dim)])
    self.serve = tf.function(self._serve, autograph=False, input_signature=[
        tf.TensorSpec([None], tf.string, name="text"),
        tf.TensorSpec([None], tf.string, name="image")])
    self.score_features = tf.function(
        self._score_features, autograph=False,
        input_signature=(scoring.text_signature()
                         + [scoring.features_signature(self.feature_dim)]))
    self.compute_patch_features = tf.function(
        self._compute_patch_features, autograph=False, input_signature=[scoring.image_signature()])

  def signatures(self):
    """The serving signatures, for `tf.saved_model.save(..., signatures=...)`.

    The tf.functions themselves (they have input signatures), not concrete functions traced
    beforehand: saving retraces those, so the SavedModel would hold every function twice (twice
    the graph constants of a bfloat16 export, measured).
    """
    return {"serving_default": self.serve, "score_features": self.score_features}

  @property
  def model(self):
    return self._model.value

  # ---- the functions -----------------------------------------------------------------------------

  def _compute_patch_features(self, image):
    return self.model.compute_patch_features(image)

  def _score(self, input_word_ids, input_mask, input_type_ids, patch_features):
    input_word_ids, input_mask, input_type_ids = scoring.pad_to_length_bucket(
        input_word_ids, input_mask, input_type_ids, self.length_bucket, self.max_text_length)
    probability = self._match_probability(input_word_ids, input_mask, input_type_ids,
                                          tf.cast(patch_features, tf.float32))
    return {OUTPUT_KEY: tf.identity(probability, name=OUTPUT_KEY)}

  def _serve(self, text, image):
    stripped_length = tf.strings.length(tf.strings.strip(text))
    checks = [
        tf.debugging.assert_equal(
            tf.size(text), tf.size(image),
            message="request fields `text` and `image` must have the same batch size"),
        tf.debugging.Assert(
            tf.reduce_all(stripped_length > 0),
            ["request field `text`: empty or whitespace-only text at batch positions",
             tf.reshape(tf.where(stripped_length <= 0), [-1])]),
    ]
    with tf.control_dependencies(checks):
      text = tf.identity(text)
      image = tf.identity(image)
    input_word_ids, input_mask, input_type_ids = tokenization.text_to_model_inputs(
        self.tokenizer, text, self.max_text_length)
    images = tf.map_fn(decode_image, image,
                       fn_output_signature=tf.TensorSpec(
                           [contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3], tf.uint8))
    patch_features = self.model.compute_patch_features(images)
    return self._score(input_word_ids, input_mask, input_type_ids, patch_features)

  def _score_features(self, input_word_ids, input_mask, input_type_ids, patch_features):
    batch = tf.shape(input_word_ids)[0]
    checks = text_input_checks(input_word_ids, input_mask, input_type_ids, self.max_text_length,
                               self.vocab_size)
    checks += [
        tf.debugging.assert_equal(
            tf.shape(patch_features)[0], batch,
            message="score_features: patch_features must have the batch size of input_word_ids"),
        tf.debugging.assert_greater(
            tf.shape(input_word_ids)[1], 0, message="score_features: empty text (T = 0)"),
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(input_type_ids, 0) | tf.equal(input_type_ids, 1)),
            ["score_features: input_type_ids values must be 0 (text) or 1"]),
        tf.debugging.assert_all_finite(
            patch_features, message="score_features: patch_features holds NaN or Inf"),
    ]
    with tf.control_dependencies(checks):
      input_word_ids = tf.identity(input_word_ids)
    return self._score(input_word_ids, input_mask, input_type_ids, patch_features)
