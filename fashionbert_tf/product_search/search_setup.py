"""Builds the two-stage search of a config: catalogue, product images, vectorizer, index, re-ranker.

  catalogue      `search.logs_dir`/catalogue.jsonl (ids and titles, file order);
  images         each product's first record (pose) in the image TFRecords, as the fine-tuning
                 reads them (`search/catalogue.py`);
  vectorizer     `retrieval.vectorizer` (`vectorizers.py`): "tfidf", or "encoder" from the
                 pretraining checkpoint (`search.pretrained_checkpoint`) or the fine-tuned run;
  re-ranker      the fine-tuned click model of `retrieval.search_run` (P(click), Figure 6).
Test queries for the metrics: the distinct queries of the test split, with their relevant products
(attributes: the toy truth, and clicked).
"""

import collections
import dataclasses
import json
import os
import time
from typing import Dict, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.data import search_logs
from fashionbert_tf.data import tokenization
from fashionbert_tf.data.toy import search_log_generator
from fashionbert_tf.data.toy import search_relevance
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.product_search import ann_index
from fashionbert_tf.product_search import finetuned_parts
from fashionbert_tf.product_search import two_stage
from fashionbert_tf.product_search import vectorizers
from fashionbert_tf.search import catalogue as catalogue_lib
from fashionbert_tf.search import logs as search_logs_lib
from fashionbert_tf.search import search_model_builder as search_builder


@dataclasses.dataclass
class TestQuery:
  """A distinct test query: its text, the attributes it asks for (toy logs) and its clicks."""
  query: str
  attributes: Optional[Dict]
  clicks: Dict[int, int]          # product id -> clicks over the query's test sessions
  impressions: Dict[int, int]     # product id -> times shown


def test_queries(sessions):
  """The distinct queries (normalized text) of `sessions`, in first-seen order."""
  by_query = collections.OrderedDict()
  for session in sessions:
    key = search_logs.normalize_query(session.query)
    entry = by_query.setdefault(key, TestQuery(key, session.query_attributes, {}, {}))
    for impression in session.impressions:
      entry.impressions[impression.product_id] = entry.impressions.get(impression.product_id,
                                                                       0) + 1
      if impression.clicked:
        entry.clicks[impression.product_id] = entry.clicks.get(impression.product_id, 0) + 1
  return list(by_query.values())


def attribute_relevance(config, queries, catalogue_ids):
  """[Q] sets of catalogue ids that have every attribute each query names (toy logs only).

  The truth of the toy generator (`search_relevance.product_matches`) over the toy products
  regenerated from the `data` / `search` sections.

  Raises:
    ValueError: a query has no attributes (not toy logs: only click relevance applies).
  """
  missing = [q.query for q in queries if not q.attributes]
  if missing:
    raise ValueError(f"{len(missing)} test queries have no query_attributes (e.g. {missing[0]!r}):"
                     " attribute relevance needs toy logs")
  products = search_log_generator.toy_catalogue_products(
      config.data.toy_num_train_products, config.data.toy_num_validation_products,
      config.data.toy_seed, config.search.toy_catalogue_split)
  by_id = {p.product_id: p for p in products}
  absent = [i for i in catalogue_ids if i not in by_id]
  if absent:
    raise ValueError(f"catalogue products {absent[:5]} are not toy products of data.toy_seed="
                     f"{config.data.toy_seed}: the logs were made from other toy data")
  return [{i for i in catalogue_ids if search_relevance.product_matches(by_id[i], q.attributes)}
          for q in queries]


RELEVANCES = ("attributes", "clicked")


def relevance_sets(config, queries, catalogue_ids, relevance):
  """[Q] relevance of each query: sets of ids ("attributes": the toy generator's truth) or dicts
  id -> clicks ("clicked": clicked in the query's test sessions); an empty entry = no relevant
  catalogue product (counted in the log; left out of that definition's metrics)."""
  if relevance not in RELEVANCES:
    raise ValueError(f"relevance {relevance!r}: expected one of {RELEVANCES}")
  if relevance == "attributes":
    relevant = attribute_relevance(config, queries, catalogue_ids)
  else:
    in_catalogue = set(catalogue_ids)
    relevant = [{i: n for i, n in q.clicks.items() if i in in_catalogue} for q in queries]
  empty = sum(1 for r in relevant if not r)
  if empty:
    logging.warning("%d of %d test queries have no relevant catalogue product (%s relevance): "
                    "left out of its metrics", empty, len(queries), relevance)
  return relevant


def patch_features(compute_fn, images, batch_size=64):
  """float32 [N, 64, D] from uint8 [N, 256, 256, 3] with `compute_fn` (the model's backbone)."""
  outputs = [np.asarray(compute_fn(tf.constant(images[start:start + batch_size])), np.float32)
             for start in range(0, len(images), batch_size)]
  return np.concatenate(outputs, axis=0)


def restore_pretrained_fashionbert(config):
  """(the pretraining `FashionBertModel` of `search.pretrained_checkpoint`, its run config)."""
  path, run_config = search_builder.pretraining_checkpoint(config.search)
  model_config = (run_config or config).model
  model = model_builder.build_fashionbert(model_config, load_pretrained_weights=False)
  status = tf.train.Checkpoint(model=model).restore(path).expect_partial()
  status.assert_existing_objects_matched()
  logging.info("recall encoder: pretraining checkpoint %s", path)
  return model, run_config or config


def pretrained_vectorizer(config, model, tokenizer):
  """`EncoderVectorizer` over a pretraining `FashionBertModel` (segments: text 0 for both)."""
  def sequence_output(*args):
    return vectorizers.fashionbert_sequence_output(model, *args)
  return vectorizers.EncoderVectorizer(
      sequence_output, tokenizer, pooling=config.retrieval.pooling,
      product_input=config.retrieval.product_input, batch_size=config.retrieval.batch_size)


def index_config(config):
  return ann_index.IndexConfig(mode=config.retrieval.index_mode,
                               num_leaves=config.retrieval.num_leaves,
                               num_leaves_to_search=config.retrieval.num_leaves_to_search)


@dataclasses.dataclass
class SearchSetup:
  """A ready `TwoStageSearch` and what it was built from (for reports and the image strip)."""
  search: two_stage.TwoStageSearch
  vectorizer_name: str
  reranker_name: str
  product_vectors_seconds: float
  images_by_id: Dict[int, np.ndarray]


def build_search(config, reranker=None, reranker_name="none", finetuned=None):
  """The two-stage search of `config` (module docstring).

  Args:
    config: ExperimentConfig.
    reranker: callable (queries, titles, product_ids) -> P(click), or None.
    reranker_name: label for reports.
    finetuned: `finetuned_parts.FinetunedParts` for `retrieval.encoder_source=finetuned`.
  """
  logs_dir = search_logs_lib.ensure_search_logs(config)   # toy logs are written when missing
  catalogue = search_logs.read_catalogue(os.path.join(logs_dir, search_logs.CATALOGUE_FILE))
  ids = np.array([p.product_id for p in catalogue], np.int64)
  titles = [p.title for p in catalogue]
  images_by_id = catalogue_lib.read_product_images(catalogue_lib.image_record_files(config), ids)
  images = np.stack([images_by_id[int(i)] for i in ids])
  retrieval = config.retrieval
  started = time.perf_counter()
  if retrieval.vectorizer == "tfidf":
    tokenizer = tokenization.build_tokenizer(config.data)
    vectorizer = vectorizers.WordPieceTfidfVectorizer(tokenizer, titles)
    product_vectors = vectorizer.product_vectors(titles)
  elif retrieval.encoder_source == "finetuned":
    if finetuned is None:
      raise ValueError("retrieval.encoder_source=finetuned needs the fine-tuned model")
    vectorizer = finetuned.vectorizer
    features = None
    if retrieval.product_input == "title_image":
      if finetuned.catalogue is None:
        raise ValueError(f"the fine-tuned model ({finetuned.name}) reads no image: use "
                         "retrieval.product_input=title")
      features = finetuned.catalogue.features[finetuned.catalogue.indices(ids)]
    product_vectors = vectorizer.product_vectors(titles, features)
  else:
    model, run_config = restore_pretrained_fashionbert(config)
    tokenizer = tokenization.build_tokenizer(run_config.data)
    vectorizer = pretrained_vectorizer(config, model, tokenizer)
    features = (patch_features(model.compute_patch_features, images)
                if retrieval.product_input == "title_image" else None)
    product_vectors = vectorizer.product_vectors(titles, features)
  seconds = time.perf_counter() - started
  vectorizers.log_zero_vectors("product", product_vectors)
  search = two_stage.TwoStageSearch(ids, titles, product_vectors, vectorizer, index_config(config),
                                    reranker=reranker, recall_k=retrieval.recall_k)
  logging.info("catalogue of %d products vectorized (%s) in %.1f s; index built in %.2f s",
               len(ids), vectorizers.describe(vectorizer), seconds, search.index_build_seconds)
  name = vectorizers.describe(vectorizer)
  if retrieval.vectorizer == "encoder":
    name = f"{retrieval.encoder_source} {name}"
  return SearchSetup(search, name, reranker_name, seconds, images_by_id)


def output_dir(config):
  """`retrieval.output_dir`, or <search.runs_dir>/retrieval."""
  return config.retrieval.output_dir or os.path.join(config.search.runs_dir, "retrieval")


def default_search_run(config):
  """`retrieval.search_run`, or the fashionbert run of `model.num_layers` in search.runs_dir."""
  if config.retrieval.search_run:
    return config.retrieval.search_run
  return os.path.join(config.search.runs_dir, f"fashionbert-L{config.model.num_layers}")


def build_search_from_config(config):
  """`build_search` with the re-ranker (and fine-tuned encoder) `config.retrieval` asks for."""
  search_logs_lib.ensure_search_logs(config)   # toy logs are written when missing
  reranker, reranker_name, finetuned = None, "none (recall order)", None
  needs_model = (config.retrieval.rerank or (config.retrieval.vectorizer == "encoder" and
                                             config.retrieval.encoder_source == "finetuned"))
  if needs_model:
    finetuned = finetuned_parts.load(config, default_search_run(config))
    if config.retrieval.rerank:
      reranker, reranker_name = finetuned.reranker, finetuned.name
  return build_search(config, reranker, reranker_name, finetuned)


def evaluate_from_config(config):
  """Builds the search and evaluates it on the test queries (one timed run of both stages) for
  both relevance definitions (attributes only when the logs have query attributes); writes
  retrieval.json; returns the report dict."""
  setup = build_search_from_config(config)
  queries = test_queries(search_logs.read_split(config.search.logs_dir, "test"))
  relevances = ["attributes", "clicked"] if all(q.attributes for q in queries) else ["clicked"]
  report = {"vectorizer": setup.vectorizer_name, "reranker": setup.reranker_name,
            "index_mode": config.retrieval.index_mode,
            "num_leaves": setup.search.index.num_leaves,
            "num_leaves_to_search": getattr(setup.search.index, "num_leaves_to_search", 0),
            "catalogue_size": int(setup.search.product_ids.size),
            "product_vectors_seconds": setup.product_vectors_seconds,
            "index_build_seconds": setup.search.index_build_seconds}
  catalogue_ids = setup.search.product_ids.tolist()
  report["results"] = two_stage.evaluate_relevances(
      setup.search, [q.query for q in queries],
      {name: relevance_sets(config, queries, catalogue_ids, name) for name in relevances},
      tuple(config.retrieval.recall_ks), config.retrieval.ndcg_k)
  directory = output_dir(config)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "retrieval.json")
  with open(path, "w", encoding="utf-8") as handle:
    json.dump(report, handle, indent=2, sort_keys=True)
  report["path"] = path
  return report


def format_report(report):
  """The report as a few lines of text (one per relevance definition)."""
  index = ("exact ScaNN (brute force)" if report["index_mode"] == "exact" else
           f"approximate ScaNN, {report['num_leaves']} leaves, {report['num_leaves_to_search']} "
           "searched")
  lines = [f"Two-stage retrieval: recall {report['vectorizer']} ({index}) over "
           f"{report['catalogue_size']} products; re-rank: {report['reranker']}"]
  for relevance, metrics in report["results"].items():
    recall = "  ".join(f"{name} {value:.3f}" for name, value in metrics.items()
                       if name.startswith(("recall@", "capped_recall@", "ndcg@", "exact_")))
    lines.append(f"  relevant = {relevance} ({metrics['num_queries']} queries, "
                 f"{metrics['mean_relevant_per_query']:.1f} relevant each): {recall}  "
                 f"queries/s recall {metrics['queries_per_second_recall']:.0f}, two-stage "
                 f"{metrics['queries_per_second_two_stage']:.1f}")
  if "path" in report:
    lines.append(f"written: {report['path']}")
  return "\n".join(lines)
