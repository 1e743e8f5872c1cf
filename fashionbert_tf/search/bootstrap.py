"""How sure is Table 4's ordering? A paired per-query bootstrap of the test AUCs.

Table 4's rows are scored on the same test impressions, and impressions of one query session are
not independent (one shopper, one query, one result list), so the unit resampled is the session:
each of `resamples` draws takes as many sessions as the test split has, with replacement, keeps
all their impressions, and scores every row's AUC on that same draw (paired: the rows' differences
are measured on identical data). Reported per row: the 2.5% / 97.5% percentiles of its AUC; per
layer count: the fraction of draws in which the paper's ordering holds strictly,
AUC(oriBERT) < AUC(BERT+IMG) < AUC(FashionBERT) (Table 4), and the percentiles of FashionBERT's
margin over the better baseline. Draws with only one class are redrawn (seeded, so the result is
reproducible).
"""

import numpy as np

from fashionbert_tf.evaluation import metrics

PAPER_ORDER = ("oribert", "bert_img", "fashionbert")


def session_resamples(session_index, resamples, seed):
  """Yields int arrays of impression indices, one per draw: sessions drawn with replacement.

  Args:
    session_index: int array [N]: the test session of each impression.
    resamples: number of draws.
    seed: numpy seed.
  """
  _, inverse, counts = np.unique(np.asarray(session_index), return_inverse=True,
                                 return_counts=True)
  members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
  rng = np.random.default_rng(seed)
  for _ in range(resamples):
    drawn = rng.integers(0, len(members), size=len(members))
    yield np.concatenate([members[i] for i in drawn])


def paired_bootstrap(labels, session_index, probabilities, resamples=1000, seed=0):
  """AUC of every row on the same session draws.

  Args:
    labels: 0 / 1 array [N] (clicked).
    session_index: int array [N].
    probabilities: dict row name -> float array [N] of P(click).
    resamples, seed: as `session_resamples`.

  Returns:
    dict row name -> float array [resamples] of AUCs (draws with one class replaced by others).

  Raises:
    ValueError: fewer than `resamples` of 10 x `resamples` draws hold both classes.
  """
  labels = np.asarray(labels)
  probabilities = {name: np.asarray(p) for name, p in probabilities.items()}
  aucs = {name: [] for name in probabilities}
  kept = 0
  for indices in session_resamples(session_index, 10 * resamples, seed):
    if kept == resamples:
      break
    if labels[indices].min() == labels[indices].max():
      continue
    kept += 1
    for name, probability in probabilities.items():
      aucs[name].append(metrics.roc_auc(labels[indices], probability[indices]))
  if kept < resamples:
    raise ValueError(f"only {kept} of {10 * resamples} session draws hold both clicked and "
                     "unclicked impressions: too few sessions with clicks to bootstrap")
  return {name: np.array(values) for name, values in aucs.items()}


def ordering_summary(rows, labels, session_index, probabilities, resamples=1000, seed=0):
  """The bootstrap summary of Table 4's rows (module docstring).

  Args:
    rows: Table 4 rows (dicts with "name", "variant", "layers").
    labels, session_index: as `paired_bootstrap`.
    probabilities: list of float arrays [N], one per row, in `rows`' order.

  Returns:
    {"resamples", "seed", "rows": {name: {"auc_2.5%", "auc_97.5%"}},
     "paper_ordering": {layers (str): {"fraction", "fashionbert_margin_2.5%",
     "fashionbert_margin_97.5%"}} (layer counts that have all three variants)}.
  """
  by_name = {row["name"]: p for row, p in zip(rows, probabilities)}
  aucs = paired_bootstrap(labels, session_index, by_name, resamples, seed)
  summary = {"resamples": int(resamples), "seed": int(seed), "rows": {}, "paper_ordering": {}}
  for name, values in aucs.items():
    low, high = np.percentile(values, [2.5, 97.5])
    summary["rows"][name] = {"auc_2.5%": float(low), "auc_97.5%": float(high)}
  for layers in sorted({row["layers"] for row in rows}, reverse=True):
    names = {row["variant"]: row["name"] for row in rows if row["layers"] == layers}
    if not all(variant in names for variant in PAPER_ORDER):
      continue
    ori, img, fashion = (aucs[names[variant]] for variant in PAPER_ORDER)
    margin = fashion - np.maximum(ori, img)
    low, high = np.percentile(margin, [2.5, 97.5])
    summary["paper_ordering"][str(layers)] = {
        "fraction": float(np.mean((ori < img) & (img < fashion))),
        "fashionbert_margin_2.5%": float(low), "fashionbert_margin_97.5%": float(high)}
  return summary


def format_ordering(summary):
  """Lines printed under Table 4 (empty when there is nothing to report)."""
  if not summary or not summary["rows"]:
    return []
  lines = [f"Per-query bootstrap ({summary['resamples']} draws of the test sessions, paired): "
           "95% interval of each AUC"]
  for name, interval in summary["rows"].items():
    lines.append(f"  {name:<20}[{interval['auc_2.5%']:.4f}, {interval['auc_97.5%']:.4f}]")
  for layers, order in summary["paper_ordering"].items():
    lines.append(f"  {layers}L: the paper's order BERT < BERT+IMG < FashionBERT in "
                 f"{100 * order['fraction']:.1f}% of draws; FashionBERT minus the better baseline "
                 f"[{order['fashionbert_margin_2.5%']:+.4f}, "
                 f"{order['fashionbert_margin_97.5%']:+.4f}]")
  return lines
