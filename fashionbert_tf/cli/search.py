"""`fashionbert search`: two-stage retrieval for a typed query (paper 3.4, Figure 5).

  fashionbert search --config configs/toy_search.yaml --query "red striped shirt"
  fashionbert search --config configs/toy_search.yaml --query "long sleeve navy hoodie" \
      --params_override retrieval.vectorizer=tfidf,retrieval.rerank=false

Vectorizes the catalogue (search.logs_dir/catalogue.jsonl) and builds the ScaNN index, recalls
`retrieval.recall_k` products for the query, re-ranks them with the fine-tuned click model
(`retrieval.search_run`) and prints the top `retrieval.top_n` (rank, product id, P(click), title);
writes a PNG strip of their images (`--strip_png`, default <retrieval output dir>/search_<query>.png).
"""

import os

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.cli import common_flags
from fashionbert_tf.product_search import result_strip
from fashionbert_tf.product_search import search_setup

QUERY = flags.DEFINE_multi_string("query", None, "Query text; may be given several times.")
STRIP_PNG = flags.DEFINE_string(
    "strip_png", None, "PNG strip of the results (one query); default: "
    "<retrieval.output_dir or search.runs_dir/retrieval>/search_<query>.png.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  queries = [q for q in (QUERY.value or []) if q.strip()]
  if not queries:
    raise app.UsageError("give --query \"...\" (a non-empty query text)")
  if STRIP_PNG.value and len(queries) > 1:
    raise app.UsageError("--strip_png names one PNG: give one --query with it")
  logging.set_verbosity(logging.INFO)
  config = common_flags.config_from_flags()
  with common_flags.missing_files_as_usage_error():   # missing logs, images or checkpoints
    setup = search_setup.build_search_from_config(config)
  for result in setup.search.search(queries, top_n=config.retrieval.top_n):
    print(f"query: {result.query!r}  (recall: {setup.vectorizer_name}, "
          f"{config.retrieval.index_mode} ScaNN index, top {setup.search.recall_k}; re-rank: "
          f"{setup.reranker_name})")
    print(f"  {'rank':>4}  {'product_id':>10}  {'P(click)':>8}  {'recall sim':>10}  title")
    for rank, (product_id, title, probability, similarity) in enumerate(zip(
        result.product_ids, result.titles, result.click_probability, result.recall_scores), 1):
      shown = f"{probability:8.4f}" if probability == probability else f"{'-':>8}"
      print(f"  {rank:>4}  {product_id:>10}  {shown}  {similarity:10.4f}  {title}")
    path = STRIP_PNG.value or os.path.join(search_setup.output_dir(config),
                                        result_strip.strip_file_name(result.query))
    result_strip.write_strip(result, setup.images_by_id, path,
                             title=f"search: {result.query!r} (recall {setup.vectorizer_name}, "
                             f"re-rank {setup.reranker_name})")
    print(f"  images: {path}", flush=True)


if __name__ == "__main__":
  app.run(main)
