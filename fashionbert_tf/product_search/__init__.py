"""Two-stage product search (paper 3.4, Figure 5): nearest-neighbour recall, then the fine-tuned
click model re-ranks.

Start at `search_setup.build_search_from_config(config)` (`fashionbert search`, `fashionbert
evaluate-retrieval`); `two_stage.py` is the search itself, `vectorizers.py` and `ann_index.py` the
recall, `finetuned_parts.py` the re-ranker, `ranking_metrics.py` Recall@k and NDCG@k.
"""
