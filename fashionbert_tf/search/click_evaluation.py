"""`run_search_evaluation(config)`: the paper's Table 4 on the test split of the search logs.

For every variant in `search.evaluate_variants` and layer count in `search.evaluate_layers`, the
fine-tuned run `<search.runs_dir>/<variant>-L<layers>` (made by `fashionbert finetune` with those
overrides; `finetune.finetune_dir`) is restored from its latest checkpoint and measured on the test
split's impressions (split by query: queries no run trained on):
  accuracy   P(click) > 0.5 agrees with clicked / not clicked (`metrics.click_accuracy`);
  AUC        exact, rank-based, ties averaged (`metrics.roc_auc`);
  latency    batch-1 wall time of one model call (ms; mean and median over `search.latency_examples`
             test impressions after `search.latency_warmup` calls; tokenization and the image
             backbone not included: the product's patch features are precomputed, as in serving),
             with VSL (the exact `[CLS] q [SEP] t [SEP]` length, patches right after) and without
             (the text padded to 448, so 512 positions with the 64 patches; the text-only variants
             448). Padded positions are masked, so both give the same P(click) up to round-off:
             the largest difference over the latency examples is reported.
Accuracy and AUC are computed with VSL batches of `search.eval_batch_size` (padded to each batch's
longest text). The test click rate is reported too: accuracy of always predicting "no click" is
1 - click rate.

Toy logs (attributes in the catalogue and sessions) also get their AUC ceilings on the same
impressions (`search_relevance.click_ceiling_scores`): the best any model can reach (clicks are
noisy Bernoulli draws) and the best a query + title model can; the image can add at most the
difference.
They also get, per row, which query attributes the model ranks by (`attribute_use_auc`): for each
attribute the queries name, the AUC of P(click) separating products that have it from products that
lack it, over the impressions whose product agrees with every other attribute the query names (so
the attribute alone decides the match; 0.5 = the model ignores it;
`search_relevance.attribute_agreement`). A text-only model must sit near 0.5 on attributes only the
image shows.

How sure the ordering is (`search.bootstrap_resamples` > 0; `search/bootstrap.py`): a paired
bootstrap over test sessions gives each row's 95% AUC interval and, per layer count, the fraction
of draws in which the paper's order BERT < BERT+IMG < FashionBERT holds.

Output: the Table 4 layout printed (rows nL-BERT, nL-BERT+IMG, nL-FashionBERT and each one's VSL
row, then the ceilings, the attribute table and the bootstrap) and
`<search.output_dir or runs_dir/table4>/table4.json`.
"""

import copy
import json
import os
import time

from absl import logging
import numpy as np

from fashionbert_tf.data import search_logs
from fashionbert_tf.data.toy import search_relevance
from fashionbert_tf.evaluation import metrics
from fashionbert_tf.search import bootstrap
from fashionbert_tf.search import catalogue as catalogue_lib
from fashionbert_tf.search import click_scoring
from fashionbert_tf.search import finetune
from fashionbert_tf.search import layout
from fashionbert_tf.search import logs as logs_lib
from fashionbert_tf.search import search_model_builder

ROW_NAMES = {"oribert": "BERT", "bert_img": "BERT+IMG", "fashionbert": "FashionBERT"}


def run_dir_of(config, variant, layers):
  """The fine-tuning run folder of one Table 4 row."""
  row_config = copy.deepcopy(config)
  row_config.model.search_variant = variant
  row_config.model.num_layers = layers
  row_config.train.model_dir = finetune.DEFAULT_MODEL_DIR
  return finetune.finetune_dir(row_config)


def batch1_latency(scorer, examples, indices, pad_to, warmup):
  """(mean ms, median ms, P(click) [n]) of batch-1 calls over `indices`."""
  prepared = [scorer.inputs([examples.query[i]], [examples.title[i]], [examples.product_id[i]],
                            pad_to=pad_to) for i in indices]
  for inputs in prepared[:warmup]:
    scorer.probability(inputs).numpy()
  times, probabilities = [], []
  for inputs in prepared:
    start = time.perf_counter()
    probability = scorer.probability(inputs).numpy()
    times.append(1000.0 * (time.perf_counter() - start))
    probabilities.append(float(probability[0]))
  return float(np.mean(times)), float(np.median(times)), np.asarray(probabilities)


def evaluate_run(run_dir, config, examples, feature_cache, agreement=None):
  """One Table 4 row: restores the run, scores the test impressions, times batch-1 calls (and,
  given the toy logs' `agreement`, the attributes the model ranks by).

  Returns:
    (row dict, P(click) float array [N] of the test impressions).
  """
  model, run_config, path = search_model_builder.restore_search_model(run_dir)
  variant = run_config.model.search_variant
  text_encoder = click_scoring.query_title_encoder(run_config, variant)
  catalogue = None
  if model.uses_image:
    key = (run_config.model.backbone, run_config.model.feature_dim, run_config.model.backbone_seed,
           run_config.model.backbone_weights)
    if key not in feature_cache:
      feature_cache[key] = catalogue_lib.compute_catalogue_features(
          model.patch_feature_extractor, config, set(examples.product_id.tolist()))
    catalogue = feature_cache[key]
  scorer = click_scoring.ClickScorer(model, text_encoder, catalogue)
  start = time.time()
  probability = scorer.score(examples.query, examples.title, examples.product_id,
                             batch_size=config.search.eval_batch_size)
  scoring_seconds = time.time() - start
  count = min(config.search.latency_examples, len(examples))
  indices = np.random.default_rng(0).choice(len(examples), size=count, replace=False)
  warmup = config.search.latency_warmup
  vsl_mean, vsl_median, vsl_p = batch1_latency(scorer, examples, indices, None, warmup)
  pad_mean, pad_median, pad_p = batch1_latency(scorer, examples, indices,
                                               layout.PADDED_TEXT_LENGTH, warmup)
  row = {
      "name": f"{model.encoder.num_layers}L-{ROW_NAMES[variant]}",
      "variant": variant,
      "layers": int(model.encoder.num_layers),
      "checkpoint": path,
      "test_examples": len(examples),
      "accuracy": metrics.click_accuracy(probability, examples.clicked),
      "auc": metrics.roc_auc(examples.clicked, probability),
      "latency_ms_padded": pad_mean,
      "latency_ms_padded_median": pad_median,
      "latency_ms_vsl": vsl_mean,
      "latency_ms_vsl_median": vsl_median,
      "sequence_length_padded": layout.PADDED_TEXT_LENGTH + (64 if variant == "fashionbert" else 0),
      "max_abs_probability_difference_padded_vs_vsl": float(np.max(np.abs(pad_p - vsl_p))),
      "scoring_seconds": scoring_seconds,
  }
  if agreement:
    row["attribute_auc"] = attribute_use_auc(agreement, probability)
  logging.info("%s: accuracy %.4f, AUC %.4f, latency %.1f ms padded / %.1f ms VSL", row["name"],
               row["accuracy"], row["auc"], pad_mean, vsl_mean)
  return row, probability


def toy_ceiling_auc(logs_dir, sessions, catalogue, labels):
  """AUC ceilings of toy logs on the first len(`labels`) test impressions of `sessions` (None for
  real logs): the best any model can reach and the best a query + title model can
  (`click_ceiling_scores`)."""
  settings = search_logs.read_info(logs_dir).get("settings", {})
  scores = search_relevance.click_ceiling_scores(
      sessions, catalogue, title_shows_colour=settings.get("title_shows_colour", True))
  if scores is None:
    return None
  return {name: metrics.roc_auc(labels, value[:len(labels)]) for name, value in scores.items()}


def toy_attribute_agreement(sessions, catalogue, count):
  """`search_relevance.attribute_agreement` of the first `count` test impressions (None for real
  logs)."""
  agreement = search_relevance.attribute_agreement(sessions, catalogue)
  if agreement is None:
    return None
  return {name: (deciding[:count], agrees[:count])
          for name, (deciding, agrees) in agreement.items()}


def attribute_use_auc(agreement, probability):
  """{attribute: {"auc", "impressions"}}: how well P(click) (float [N]) separates products that
  have each attribute from those that lack it where it alone decides the match (`agreement`:
  `search_relevance.attribute_agreement`); attributes without both cases are left out."""
  result = {}
  for name, (deciding, agrees) in agreement.items():
    labels = agrees[deciding].astype(np.int32)
    if 0 < labels.sum() < len(labels):
      result[name] = {"auc": metrics.roc_auc(labels, probability[deciding]),
                      "impressions": int(len(labels))}
  return result


def format_attribute_use(rows):
  """Lines of the attribute table: one column per attribute, one line per row (empty if none)."""
  names = [n for n in search_relevance.QUERY_ATTRIBUTES
           if any(n in row.get("attribute_auc", {}) for row in rows)]
  if not names:
    return []
  counts = {n: max(row["attribute_auc"].get(n, {}).get("impressions", 0) for row in rows)
            for n in names}
  lines = ["Which query attributes each model ranks by (AUC of P(click): products with the "
           "attribute vs without, where it alone decides the match; 0.5 = ignored):",
           f"{'':<22}" + "".join(f"{n:>10}" for n in names)]
  for row in rows:
    cells = [row["attribute_auc"].get(n, {}).get("auc") for n in names]
    lines.append(f"{row['name']:<22}" + "".join(f"{c:>10.3f}" if c is not None else f"{'-':>10}"
                                                for c in cells))
  lines.append(f"{'(impressions)':<22}" + "".join(f"{counts[n]:>10d}" for n in names))
  return lines


def format_table4(rows, click_rate, ceiling=None, ordering=None):
  """The paper's Table 4 layout: each model, then its VSL row (and toy logs' AUC ceilings, the
  attribute table, the bootstrap `ordering` summary)."""
  lines = [f"{'Metric':<22}{'Accuracy':>10}{'AUC':>9}{'Latency(ms)':>13}",
           "-" * 54]
  for row in rows:
    for suffix, latency in (("", row["latency_ms_padded"]), ("(VSL)", row["latency_ms_vsl"])):
      lines.append(f"{row['name'] + suffix:<22}{100 * row['accuracy']:>9.2f}%"
                   f"{row['auc']:>9.4f}{latency:>13.1f}")
  lines.append(f"(test click rate {100 * click_rate:.1f}%: always 'no click' scores "
               f"{100 * (1 - click_rate):.2f}% accuracy; latency: batch 1, mean ms, text padded "
               "to 448 (+64 patches) vs VSL)")
  if ceiling:
    lines.append(f"(toy logs, the generator's truth: AUC ceiling {ceiling['all_attributes']:.4f} "
                 f"for any model, {ceiling['title_attributes']:.4f} from what the titles show; the "
                 "image can add at most the difference)")
  return "\n".join(lines + format_attribute_use(rows) + bootstrap.format_ordering(ordering))


def run_search_evaluation(config, variants=None, layers=None):
  """Evaluates every (layers, variant) run; prints Table 4 and writes table4.json; returns it."""
  variants = list(variants or config.search.evaluate_variants)
  layer_counts = list(layers or config.search.evaluate_layers)
  logs_dir = logs_lib.ensure_search_logs(config)
  sessions = search_logs.read_split(logs_dir, "test")
  examples = search_logs.impression_examples(sessions)
  if config.search.max_test_examples:
    count = config.search.max_test_examples
    examples = search_logs.ImpressionExamples(
        examples.query[:count], examples.title[:count], examples.product_id[:count],
        examples.clicked[:count], examples.session_index[:count])
  missing = [run_dir_of(config, v, k) for k in layer_counts for v in variants
             if not os.path.isdir(run_dir_of(config, v, k))]
  if missing:
    raise FileNotFoundError(
        f"no fine-tuning run in {', '.join(missing)}: train each with `fashionbert finetune "
        "--params_override model.search_variant=<variant>,model.num_layers=<layers>`")
  feature_cache = {}
  catalogue = search_logs.read_catalogue(os.path.join(logs_dir, search_logs.CATALOGUE_FILE))
  agreement = toy_attribute_agreement(sessions, catalogue, len(examples))
  scored = [evaluate_run(run_dir_of(config, v, k), config, examples, feature_cache, agreement)
            for k in layer_counts for v in variants]
  rows = [row for row, _ in scored]
  click_rate = float(np.mean(examples.clicked))
  ceiling = toy_ceiling_auc(logs_dir, sessions, catalogue, examples.clicked)
  ordering = None
  if config.search.bootstrap_resamples:
    ordering = bootstrap.ordering_summary(rows, examples.clicked, examples.session_index,
                                          [probability for _, probability in scored],
                                          config.search.bootstrap_resamples)
  table = format_table4(rows, click_rate, ceiling, ordering)
  print(table, flush=True)
  output_dir = config.search.output_dir or os.path.join(config.search.runs_dir, "table4")
  os.makedirs(output_dir, exist_ok=True)
  result = {"rows": rows, "test_click_rate": click_rate, "test_examples": len(examples),
            "logs_dir": logs_dir, "toy_ceiling_auc": ceiling, "bootstrap": ordering,
            "table": table}
  path = os.path.join(output_dir, "table4.json")
  with open(path, "w", encoding="utf-8") as handle:
    json.dump(result, handle, indent=2)
  logging.info("Table 4 written to %s", path)
  result["path"] = path
  return result
