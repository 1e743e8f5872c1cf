"""The paired per-query bootstrap of Table 4's AUCs (search/bootstrap.py): whole sessions are
drawn, rows are scored on the same draws, intervals agree with the analytic AUC standard error,
and the paper's ordering is counted only where it holds strictly."""

import numpy as np
import pytest

from fashionbert_tf.evaluation import metrics
from fashionbert_tf.search import bootstrap


def _hanley_mcneil_se(auc, positives, negatives):
  """Standard error of an AUC from independent examples (Hanley & McNeil 1982)."""
  q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
  variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) +
              (negatives - 1) * (q2 - auc * auc)) / (positives * negatives)
  return np.sqrt(variance)


def test_draws_take_whole_sessions_with_replacement_and_are_seeded():
  session_index = np.array([0, 0, 0, 1, 2, 2, 5, 5, 5, 5])
  sizes = {0: 3, 1: 1, 2: 2, 5: 4}
  draws = list(bootstrap.session_resamples(session_index, 200, seed=4))
  for indices in draws:
    drawn = session_index[indices]
    counts = {s: int((drawn == s).sum()) for s in sizes}
    # Each session appears a whole number of times, all its impressions each time.
    assert all(counts[s] % sizes[s] == 0 for s in sizes)
    assert sum(counts[s] // sizes[s] for s in sizes) == len(sizes)
  assert len({tuple(d) for d in draws}) > 20                      # they vary
  again = list(bootstrap.session_resamples(session_index, 200, seed=4))
  assert all((a == b).all() for a, b in zip(draws, again))


def test_interval_width_agrees_with_the_analytic_standard_error():
  rng = np.random.default_rng(0)
  labels = (rng.random(2000) < 0.2).astype(int)
  scores = labels * 0.8 + rng.normal(size=2000)                   # AUC ~0.72
  aucs = bootstrap.paired_bootstrap(labels, np.arange(2000), {"model": scores},
                                    resamples=400, seed=1)["model"]
  auc = metrics.roc_auc(labels, scores)
  se = _hanley_mcneil_se(auc, labels.sum(), len(labels) - labels.sum())
  assert abs(aucs.std() / se - 1.0) < 0.2
  assert abs(aucs.mean() - auc) < 0.3 * se


def test_sessions_that_move_together_widen_the_interval():
  """Clicks of one session share a shopper: resampling impressions alone would understate it."""
  rng = np.random.default_rng(2)
  session_effect = np.repeat(rng.normal(size=100), 20)           # 100 sessions of 20
  labels = (rng.random(2000) < 0.3).astype(int)
  scores = labels * 0.5 + 2.0 * session_effect * (labels - 0.5) + rng.normal(size=2000)
  by_session = bootstrap.paired_bootstrap(labels, np.repeat(np.arange(100), 20),
                                          {"m": scores}, resamples=300, seed=0)["m"]
  by_impression = bootstrap.paired_bootstrap(labels, np.arange(2000), {"m": scores},
                                             resamples=300, seed=0)["m"]
  assert by_session.std() > 1.5 * by_impression.std()


def _rows(layers=6):
  return [{"name": f"{layers}L-{name}", "variant": variant, "layers": layers}
          for name, variant in (("BERT", "oribert"), ("BERT+IMG", "bert_img"),
                                ("FashionBERT", "fashionbert"))]


@pytest.mark.parametrize("noise, expected", [((3.0, 1.0, 0.3), 1.0), ((0.3, 1.0, 3.0), 0.0),
                                             ((1.0, 1.0, 1.0), 0.0)])
def test_paper_ordering_counted_only_where_it_holds_strictly(noise, expected):
  rng = np.random.default_rng(5)
  labels = (rng.random(3000) < 0.2).astype(int)
  base = rng.normal(size=3000)
  probabilities = [labels + scale * base for scale in noise]      # less noise = higher AUC
  summary = bootstrap.ordering_summary(_rows(), labels, np.arange(3000) // 10, probabilities,
                                       resamples=200, seed=3)
  order = summary["paper_ordering"]["6"]
  assert order["fraction"] == expected
  if expected == 1.0:
    assert order["fashionbert_margin_2.5%"] > 0
  else:
    assert order["fashionbert_margin_97.5%"] <= 0
  for row, probability in zip(_rows(), probabilities):
    interval = summary["rows"][row["name"]]
    assert interval["auc_2.5%"] <= metrics.roc_auc(labels, probability) <= interval["auc_97.5%"]
  text = "\n".join(bootstrap.format_ordering(summary))
  assert f"6L: the paper's order BERT < BERT+IMG < FashionBERT in {100 * expected:.1f}%" in text


def test_layer_counts_without_all_three_variants_get_no_ordering():
  labels = np.array([0, 1] * 50)
  summary = bootstrap.ordering_summary(_rows()[:2], labels, np.arange(100),
                                       [labels * 1.0, labels * 0.5], resamples=20)
  assert summary["paper_ordering"] == {} and set(summary["rows"]) == {"6L-BERT", "6L-BERT+IMG"}


def test_too_few_clicked_sessions_is_a_clear_error():
  labels = np.zeros(200, int)                                     # no session with a click
  with pytest.raises(ValueError, match="too few sessions with clicks"):
    bootstrap.paired_bootstrap(labels, np.arange(200) // 2, {"m": np.arange(200.0)},
                               resamples=50)
