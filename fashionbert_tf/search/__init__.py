"""FashionBERT in search (paper 3.4, Figures 5-6, Table 4): click prediction on <query, title, image>.

Public API (stable; the two-stage retrieval and the export build on it):

Search logs (format: `fashionbert_tf/data/search_logs.py`, data/README.md "Search logs"):
  data.search_logs.read_catalogue(path) / read_split(logs_dir, "train" | "test")
  data.search_logs.impression_examples(sessions) -> ImpressionExamples (query, title, product_id,
      clicked), data.search_logs.split_by_query(sessions, test_fraction, seed)
  data.toy_search_logs: the seeded toy generator (`product_matches` = the toy's relevance truth)
  search.logs.ensure_search_logs(config) -> logs folder (toy logs generated when missing)

Input layout (`search/layout.py`), Figure 6: `[CLS] query [SEP] title [SEP] p_1 .. p_64`, segment
ids Q = 0, I = 1, T = 2 (Q and I keep the pretraining checkpoint's text and image rows; T is the
added third row, `search.title_segment_init`):
  layout.QueryTitleEncoder(tokenizer, max_query_length, max_title_length)
      .encode(queries, titles, pad_to=None) -> {input_word_ids, input_mask, input_type_ids} int32
      [B, T] (T = the batch's longest; pad_to=448 = the padded, non-VSL layout)
  layout.full_segment_ids(input_type_ids, with_image) -> int32 [B, T(+64)] (for inspection)

Model (`search/model.py`, built by `search/search_model_builder.py`), `model.search_variant`:
  "fashionbert"  Q/T/I through one cross-attention encoder, click head on the pooled [CLS];
  "oribert"      query + title only (segments Q / T), click head on the pooled [CLS];
  "bert_img"     text encoder over query + title; its pooled [CLS] concatenated with a projection
                 of the pooled patch features (`search.image_pooling`), then the click head.
  model_builder.build_search_model(config) -> (SearchModel, model section), initialized from the pretraining
      checkpoint (`search.pretrained_checkpoint`) or the base BERT (`search.baseline_init`), with
      `model.num_layers` layers (the first k of the checkpoint's).
  SearchModel(inputs) -> {"click_logits": float32 [B, 2], "pooled_output": float32 [B, H]};
      inputs: the layout's three text keys (+ "patch_features" float32 [B, 64, D] for the image
      variants). P(click) = softmax(click_logits)[:, 1]. `search.image_dropout_rate`: training
      hides the image of that fraction of impressions (model.py).

Product images (`search/catalogue.py`): a product's image = its first TFRecord (pose) by product_id
  catalogue.compute_catalogue_features(model.patch_feature_extractor, config, product_ids)
      -> CatalogueFeatures (product_ids [P], features float32 [P, 64, D], .indices(ids))

Scoring (`search/click_scoring.py`):
  scoring.query_title_encoder(config, variant) -> layout.QueryTitleEncoder
  scoring.ClickScorer(model, text_encoder, catalogue=None).score(queries, titles, product_ids,
      batch_size=64, pad_to=None) -> float32 [N] P(click | query, title, image)

Restoring a fine-tuned run (`search/search_model_builder.py`):
  restore.restore_search_model(run_dir or checkpoint prefix) -> (SearchModel, ExperimentConfig,
      checkpoint path); the run's params.yaml gives variant, layers and sizes.
  finetune.finetune_dir(config) -> the run folder: train.model_dir, or
      <search.runs_dir>/<variant>-L<layers> when train.model_dir is left at its default.

Two-stage retrieval (Figure 5: nearest-neighbour recall, then the click model re-ranks):
  retrieval_config     the `retrieval` config section (vectorizer, pooling, index mode, recall_k,
                       top_n, rerank, search_run, metrics' k, output dir).
  vectorizers          query / product vectors for the recall, L2-normalized float32 [N, d]:
                       WordPiece TF-IDF, or one encoder's two towers (pooled sequence output).
  ann_index            the ScaNN nearest-neighbour index (exact / approximate) over those vectors,
                       exact neighbours and the approximate index's recall against them.
  two_stage            TwoStageSearch (recall_k from the index, re-ranked by P(click)) ->
                       SearchResult; evaluate / evaluate_relevances over test queries.
  ranking_metrics      Recall@k, capped Recall@k, NDCG@k over ranked product-id lists.
  retrieval_setup      builds a config's search (catalogue, images, vectorizer, index, re-ranker):
                       build_search_from_config, evaluate_from_config, format_report.
  retrieval_finetuned  a fine-tuned run as re-ranker (ClickScorer) and optionally recall encoder.
  result_strip         a PNG strip of one search's top products (image, rank, title, scores).

Commands: `fashionbert finetune` (search/finetune.py), `fashionbert evaluate-search`
(search/click_evaluation.py: accuracy, AUC, batch-1 latency with / without VSL in Table 4's layout; the
paired per-query bootstrap of the AUCs and the paper's ordering: search/bootstrap.py),
`fashionbert search` and `fashionbert evaluate-retrieval` (two-stage retrieval, retrieval_setup.py).
The fine-tuned model's SavedModel: `fashionbert export --search_run` (serving/search_export.py).
"""
