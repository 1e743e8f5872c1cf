"""The fine-tuned click model in the two-stage search: the re-ranker, and optionally the recall
encoder (`retrieval.encoder_source=finetuned`).

Re-ranker: `click_scoring.ClickScorer` over the run's `SearchModel` (P(click | query, title, image),
Figure 6), with the catalogue's patch features computed once by the model's backbone.

Recall encoder from the fine-tuned model: the same two towers as from the pretrained one
(`vectorizers.EncoderVectorizer`), through the fine-tuned encoder with the fine-tuning segments:
query `[CLS] q [SEP]` with segment Q (0), product `[CLS] t [SEP] p_1..p_64` with the title segment
(T = 2 for fashionbert) and the patches with I through the model's patch embedding. Only the
fashionbert variant has patches in its encoder: the text-only variants vectorize titles alone
(`retrieval.product_input=title`).
"""

import dataclasses
import os
from typing import Callable

import tensorflow as tf

from fashionbert_tf.data import contract
from fashionbert_tf.data import search_logs
from fashionbert_tf.product_search import vectorizers
from fashionbert_tf.search import catalogue as catalogue_lib
from fashionbert_tf.search import click_scoring
from fashionbert_tf.search import layout
from fashionbert_tf.search import search_model_builder


@dataclasses.dataclass
class FinetunedParts:
  model: object                      # SearchModel
  run_config: object                 # the run's ExperimentConfig
  checkpoint: str
  catalogue: object                  # CatalogueFeatures or None (oribert)
  reranker: Callable
  vectorizer: object                 # EncoderVectorizer over the fine-tuned encoder
  name: str


def search_model_sequence_output(model):
  """`sequence_output_fn` for `EncoderVectorizer` over a `SearchModel`'s encoder.

  (ids, mask, types [B, T], patch features float32 [B, 64, D] or None) -> float32 [B, T(+64), H].
  """
  def sequence_output(input_word_ids, input_mask, input_type_ids, patch_features=None):
    inputs = dict(input_word_ids=input_word_ids, input_mask=input_mask,
                  input_type_ids=input_type_ids)
    if patch_features is not None:
      if model.variant != "fashionbert":
        raise ValueError(f"search variant {model.variant!r} has no patches in its encoder: use "
                         "retrieval.product_input=title")
      features = model.patch_features({contract.FEATURES_KEY: patch_features}, training=False)
      batch_size = tf.shape(input_word_ids)[0]
      inputs.update(dense_inputs=model.patch_embedding(features),
                    dense_mask=tf.ones([batch_size, contract.NUM_PATCHES], tf.int32))
    return tf.cast(model.encoder(inputs, training=False)["sequence_output"], tf.float32)
  return sequence_output


def load(config, run):
  """Restores the fine-tuned run `run` and builds its re-ranker and recall vectorizer.

  The catalogue (search.logs_dir) and image records are those of `config`.
  """
  model, run_config, path = search_model_builder.restore_search_model(run)
  catalogue = None
  if model.uses_image:
    products = search_logs.read_catalogue(
        os.path.join(config.search.logs_dir, search_logs.CATALOGUE_FILE))
    catalogue = catalogue_lib.compute_catalogue_features(
        model.patch_feature_extractor, config, [p.product_id for p in products])
  text_encoder = click_scoring.query_title_encoder(run_config, model.variant)
  scorer = click_scoring.ClickScorer(model, text_encoder, catalogue)
  batch_size = config.retrieval.batch_size

  def reranker(queries, titles, product_ids):
    return scorer.score(list(queries), list(titles), list(product_ids), batch_size=batch_size)

  vectorizer = vectorizers.EncoderVectorizer(
      search_model_sequence_output(model), text_encoder.tokenizer,
      pooling=config.retrieval.pooling, product_input=config.retrieval.product_input,
      batch_size=batch_size, query_type_id=layout.QUERY_SEGMENT_ID,
      title_type_id=layout.title_segment_id(model.variant))
  name = f"{model.variant}-L{model.encoder.num_layers} ({path})"
  return FinetunedParts(model, run_config, path, catalogue, reranker, vectorizer, name)
