"""P(click | query, title, image) in batches, from a `SearchModel` (paper 3.4).

`ClickScorer(model, text_encoder, catalogue)` scores parallel lists of queries, titles and product
ids: the text goes through the Q/T layout (`layout.QueryTitleEncoder`), the image is the product's
patch features from `catalogue` (`catalogue.CatalogueFeatures`; not needed for oribert).
"""

import numpy as np
import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import tokenization
from fashionbert_tf.search import click_model as model_lib
from fashionbert_tf.search import layout


def query_title_encoder(config, variant):
  """The `QueryTitleEncoder` of an experiment config (data.vocab_file, search lengths)."""
  return layout.QueryTitleEncoder(tokenization.build_tokenizer(config.data),
                                  config.search.max_query_length, config.search.max_title_length,
                                  layout.title_segment_id(variant))


class ClickScorer:
  """Batched click probabilities of a search model."""

  def __init__(self, model, text_encoder, catalogue=None):
    """Args:
      model: `SearchModel`.
      text_encoder: `layout.QueryTitleEncoder` (its title segment must suit the model's variant).
      catalogue: `CatalogueFeatures` with every product to score (image variants).
    """
    if model.uses_image and catalogue is None:
      raise ValueError(f"search variant {model.variant!r} needs catalogue patch features")
    self.model = model
    self.text_encoder = text_encoder
    self.catalogue = catalogue
    self._call = tf.function(lambda inputs: model_lib.click_probability(
        model(inputs, training=False)), reduce_retracing=True)

  def inputs(self, queries, titles, product_ids, pad_to=None):
    """The model input dict for one batch (text layout + patch features)."""
    inputs = self.text_encoder.encode(list(queries), list(titles), pad_to=pad_to)
    if self.model.uses_image:
      rows = self.catalogue.indices(product_ids)
      inputs[contract.FEATURES_KEY] = tf.constant(self.catalogue.features[rows])
    return inputs

  def probability(self, inputs):
    """float32 [B] P(click) for a prepared input dict."""
    return self._call(inputs)

  def score(self, queries, titles, product_ids, batch_size=64, pad_to=None):
    """float32 [N] P(click | query_n, title_n, image of product_n).

    Args:
      queries, titles, product_ids: parallel sequences of length N.
      batch_size: examples per model call; each batch padded to its own longest text (VSL) unless
        `pad_to` (e.g. 448) is given.
    """
    if not len(queries) == len(titles) == len(product_ids):
      raise ValueError(f"queries ({len(queries)}), titles ({len(titles)}) and product_ids "
                       f"({len(product_ids)}) must have the same length")
    scores = []
    for begin in range(0, len(queries), batch_size):
      end = begin + batch_size
      scores.append(self.probability(self.inputs(
          queries[begin:end], titles[begin:end], product_ids[begin:end], pad_to)).numpy())
    return np.concatenate(scores) if scores else np.zeros([0], np.float32)
