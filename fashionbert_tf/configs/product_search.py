"""Settings of the two-stage retrieval (paper 3.4, Figure 5): the `retrieval` config section.

`fashionbert evaluate-retrieval` scores the test queries against two definitions of relevant
(product_search/search_setup.py): "attributes" (toy logs: every catalogue product with all the
attributes the query names, the generator's truth) and "clicked" (the products clicked in the
query's test sessions, gain = clicks).

Read by `fashionbert search` and `fashionbert evaluate-retrieval`; the search logs, catalogue,
fine-tuning runs and product images are the `search` section's.
"""

import dataclasses
from typing import List

from official.modeling.hyperparams import base_config

VECTORIZERS = ("encoder", "tfidf")
ENCODER_SOURCES = ("pretrained", "finetuned")


@dataclasses.dataclass
class RetrievalConfig(base_config.Config):
  """What `fashionbert search` / `fashionbert evaluate-retrieval` read (product_search/)."""
  # How queries and products become vectors (product_search/vectorizers.py): "tfidf" (WordPiece
  # TF-IDF over the titles) or "encoder" (one shared FashionBERT encoder as both towers: query tower over
  # the query text, product tower over the title (+ image patches)). Default tfidf: on the toy
  # logs it recalls far more than any encoder readout measured (docs/experiments/two_stage_retrieval.md):
  # the encoders were trained as cross-encoders (TIA, click), never for query-product similarity.
  vectorizer: str = "tfidf"
  # Which encoder vectorizes: "pretrained" (the pretraining checkpoint,
  # `search.pretrained_checkpoint`) or "finetuned" (the encoder of the fine-tuned click model
  # `search_run`, segments Q for the query and T for the title).
  encoder_source: str = "pretrained"
  pooling: str = "text_mean"               # "text_mean" | "cls"
  # "title" (default: measured better, docs/experiments/two_stage_retrieval.md) or "title_image" (patches in the product tower).
  product_input: str = "title"
  # Nearest-neighbour index (product_search/ann_index.py): "approximate" (ScaNN tree + AH +
  # reorder) or "exact" (ScaNN brute force); 0 = the index's defaults (sqrt(N) leaves, a quarter searched).
  index_mode: str = "approximate"
  num_leaves: int = 0
  num_leaves_to_search: int = 0
  # Products the recall stage hands to the re-ranker, and how many the search shows.
  recall_k: int = 50
  top_n: int = 10
  # Re-rank with the fine-tuned click model (`search_run`); false = the recall order.
  rerank: bool = True
  # The fine-tuned run (folder or checkpoint prefix) that re-ranks (and vectorizes with
  # encoder_source "finetuned"); empty = <search.runs_dir>/fashionbert-L<model.num_layers>.
  search_run: str = ""
  recall_ks: List[int] = dataclasses.field(default_factory=lambda: [10, 50])
  ndcg_k: int = 10
  # Where evaluate-retrieval writes retrieval.json and search writes its PNG strips; empty =
  # <search.runs_dir>/retrieval.
  output_dir: str = ""
  batch_size: int = 64

  def validate(self):
    super().validate()
    for name, allowed in (("vectorizer", VECTORIZERS), ("encoder_source", ENCODER_SOURCES),
("pooling", ("text_mean", "cls")),
                          ("product_input", ("title_image", "title")),
                          ("index_mode", ("approximate", "exact"))):
      if getattr(self, name) not in allowed:
        raise ValueError(f"retrieval.{name} = {getattr(self, name)!r}; expected one of {allowed}")
    if self.recall_k < 1 or self.top_n < 1 or self.ndcg_k < 1:
      raise ValueError("retrieval.recall_k, top_n and ndcg_k must be >= 1")
    if any(k > self.recall_k for k in self.recall_ks):
      raise ValueError(f"retrieval.recall_ks {list(self.recall_ks)} must be <= recall_k "
                       f"({self.recall_k})")
