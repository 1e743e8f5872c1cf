"""Search settings (paper 3.4): the search logs, the fine-tuning run and the Table 4 evaluation.

The model variant is `model.search_variant` (fashionbert | oribert | bert_img) and the layer count
`model.num_layers` (0 = all of the checkpoint's); the optimizer, schedule, strategy, precision,
checkpoint and logging settings of fine-tuning are the `train` section, as in pretraining.
"""

import dataclasses
from typing import List

from official.modeling.hyperparams import base_config

from fashionbert_tf.configs import toy_search_attributes

SEARCH_VARIANTS = ("fashionbert", "oribert", "bert_img")
TOY_CATALOGUE_SPLITS = ("train", "validation", "both")
BASELINE_INITS = ("bert", "pretrained")
TITLE_SEGMENT_INITS = ("text", "mean", "random")
CLICK_HEAD_INITS = ("tia", "random")
IMAGE_POOLINGS = ("mean", "max")


@dataclasses.dataclass
class SearchConfig(base_config.Config):
  """What `fashionbert finetune` and `fashionbert evaluate-search` read."""
  # Folder of the search logs (format: fashionbert_tf/data/search_logs.py, data/README.md):
  # catalogue.jsonl, train.jsonl, test.jsonl. Missing and named like a toy folder ("toy" in the
  # path): generated from the toy products (fashionbert_tf/data/toy/search_log_generator.py).
  logs_dir: str = "data/toy2k/search_logs"
  # Toy logs: which toy products form the catalogue ("validation": the 300 products pretraining
  # never saw; "train"; "both"), sessions, impressions per session, click rates, seed.
  toy_catalogue_split: str = "validation"
  toy_num_sessions: int = 3000
  toy_impressions_per_query: int = 10
  toy_click_rate_match: float = 0.6
  toy_click_rate_partial: float = 0.08
  toy_click_rate_other: float = 0.02
  # Image-deciding toy logs (search_log_generator.ToySearchLogSettings): the probability that a
  # query names an attribute only the image shows (sleeve, neckline, detail), the probability that a
  # partial impression matches everything the query names that the title shows (garment, colour,
  # pattern), and the most partial impressions per session. 0, 0, 4 = logs where the title decides
  # nearly every click (the query + title ceiling within 0.02 AUC of the best).
  toy_image_attribute_rate: float = 0.0
  toy_title_match_partial_rate: float = 0.0
  toy_max_partial_impressions: int = 4
  # The image-only attributes toy_image_attribute_rate draws from: any of sleeve, neckline, detail
  # (and colour when toy_title_shows_colour is false).
  toy_image_attributes: List[str] = dataclasses.field(
      default_factory=lambda: list(toy_search_attributes.IMAGE_ATTRIBUTES))
  # Toy titles name the colour ("Nordic Pixel Navy Striped Hoodie") or leave it to the image.
  toy_title_shows_colour: bool = True
  toy_test_fraction: float = 0.2       # of distinct queries (split by query)
  toy_seed: int = 0
  # TFRecords the product images (patch features) are read from, by product_id (a product's first
  # record = its first pose); empty = the image shards of data.tfrecord_dir (or TFDS's, data.source).
  image_records: str = ""
  # Pretraining checkpoint FashionBERT (and, with baseline_init "pretrained", the baselines) start
  # from: a prefix (runs/toy/ckpt-1300) or a run folder (its latest checkpoint). The pretraining
  # run's params.yaml (next to it) gives the model it was made with.
  pretrained_checkpoint: str = "runs/toy"
  # Where oriBERT and BERT+IMG start: "bert" = the original BERT named by model.encoder_format /
  # model.encoder_checkpoint (the paper: "In pre-training, we adopt the original pre-trained BERT
  # model"), or "pretrained" = the encoder of `pretrained_checkpoint`.
  baseline_init: str = "bert"
  # The new title segment row (segment ids: Q = 0, I = 1, T = 2; see search/layout.py):
  # "text" = a copy of the checkpoint's text row 0, "mean" = mean of rows 0 and 1, "random".
  title_segment_init: str = "text"
  # FashionBERT's click head: "tia" = the pretrained TIA classifier (P(click) starts as "does the
  # image match the text"), "random" = fresh (BERT's truncated normal), as the baselines' heads.
  click_head_init: str = "tia"
  # Model reduction after fine-tuning: a fine-tuning run (folder or checkpoint prefix) of the same
  # variant with at least model.num_layers layers; the model starts from its first
  # model.num_layers layers and the rest of its weights (patch embedding, click head, image
  # projection, patch statistics) instead of the pretraining checkpoint. Empty = reduce before
  # fine-tuning (slice the pretraining checkpoint, the default). The paper keeps "only the first
  # two FashionBERT layers" in its final model (3.4) without saying which; model_builder.py.
  reduce_from: str = ""
  # BERT+IMG: how the 64 patch features are pooled before the projection: "mean" or "max".
  image_pooling: str = "mean"
  # Image dropout in fine-tuning (not in the paper; 0 = off, the paper's recipe): the fraction of
  # training impressions whose image is hidden, drawn per impression each step. FashionBERT: the
  # 64 patches are masked out of attention, so the impression is `[CLS] q [SEP] t [SEP]` alone;
  # BERT+IMG: the image half of the click head's input is zeroed. Inference always sees the image.
  # It makes the image variants learn the query / title comparison the image cannot replace
  # (docs/experiments/table4_investigation.md).
  image_dropout_rate: float = 0.0
  # WordPiece budget of the query and of the title (each cut to this many pieces before
  # `[CLS] q [SEP] t [SEP]`).
  max_query_length: int = 16
  max_title_length: int = 32
  # Fine-tuning runs: <runs_dir>/<variant>-L<layers> unless train.model_dir is set to something
  # other than the pretraining default (search/runs.py).
  runs_dir: str = "runs/toy_search"
  # Fraction of the train split's distinct queries held out as the validation slice (TensorBoard
  # loss / accuracy / AUC during fine-tuning); 0 = none.
  validation_query_fraction: float = 0.1
  # Validation impressions scored each time (the first N of the slice); 0 = all of them.
  validation_max_examples: int = 512
  # evaluate-search: the variants and layer counts of the Table 4 rows; batch size for scoring;
  # batch-1 latency measured over this many test impressions (after `latency_warmup` calls).
  evaluate_variants: List[str] = dataclasses.field(
      default_factory=lambda: ["oribert", "bert_img", "fashionbert"])
  evaluate_layers: List[int] = dataclasses.field(default_factory=lambda: [6, 2])
  eval_batch_size: int = 64
  max_test_examples: int = 0           # 0 = every test impression
  latency_examples: int = 50
  latency_warmup: int = 5
  # Paired per-query bootstrap of the rows' test AUCs (search/bootstrap.py): draws; 0 = none.
  bootstrap_resamples: int = 1000
  # Where evaluate-search writes table4.json; empty = <runs_dir>/table4.
  output_dir: str = ""

  def validate(self):
    super().validate()
    choices = {"toy_catalogue_split": TOY_CATALOGUE_SPLITS, "baseline_init": BASELINE_INITS,
               "title_segment_init": TITLE_SEGMENT_INITS,
               "click_head_init": CLICK_HEAD_INITS, "image_pooling": IMAGE_POOLINGS}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"search.{name} = {getattr(self, name)!r}; expected one of {allowed}")
    try:
      toy_search_attributes.check_image_attributes(self.toy_image_attributes,
                                                   self.toy_title_shows_colour)
    except ValueError as error:
      raise ValueError(f"search.toy_image_attributes: {error}") from None
    for variant in self.evaluate_variants:
      check_search_variant(variant, "search.evaluate_variants")
    if not 0.0 <= self.image_dropout_rate < 1.0:
      raise ValueError(f"search.image_dropout_rate = {self.image_dropout_rate}; expected 0 <= "
                       "rate < 1")
    if self.bootstrap_resamples < 0:
      raise ValueError(f"search.bootstrap_resamples = {self.bootstrap_resamples}; expected >= 0")
    if self.max_query_length < 1 or self.max_title_length < 1:
      raise ValueError("search.max_query_length and search.max_title_length must be >= 1")


def check_search_variant(variant, option="model.search_variant"):
  """Raises ValueError naming `option` unless `variant` is a known search variant."""
  if variant not in SEARCH_VARIANTS:
    raise ValueError(f"{option} = {variant!r}; expected one of {SEARCH_VARIANTS}")
  return variant
