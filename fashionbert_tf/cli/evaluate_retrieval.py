"""`fashionbert evaluate-retrieval`: Recall@k, NDCG@10 and queries/s of the two-stage search.

  fashionbert evaluate-retrieval --config configs/toy_search.yaml
  fashionbert evaluate-retrieval --config configs/toy_search.yaml \
      --params_override retrieval.vectorizer=tfidf

Over the distinct queries of the test split (search.logs_dir/test.jsonl): Recall@k (and capped
Recall@k) of the recall stage, NDCG@10 in the recall order and after re-ranking, the overlap of the
approximate index's top k with exact search, and queries per second (recall stage alone; both
stages). Prints one line per relevance definition and writes retrieval.json to the retrieval
output dir (`retrieval.output_dir`, default <search.runs_dir>/retrieval).
"""

from absl import app

from fashionbert_tf.cli import common_flags
from fashionbert_tf.product_search import search_setup


def main(argv):
  config = common_flags.start_command(argv)
  with common_flags.missing_files_as_usage_error():   # missing logs, images or checkpoints
    report = search_setup.evaluate_from_config(config)
  print(search_setup.format_report(report), flush=True)


if __name__ == "__main__":
  app.run(main)
