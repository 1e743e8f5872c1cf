"""The authors' evaluation and training files (their exact text format, written here, small D)
through `fashionbert evaluate --authors_*` and the pretraining data source."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import easytransfer_reference as ref
from fashionbert_tf.cli import evaluate as evaluate_cli
from fashionbert_tf.cli import pretrain as pretrain_cli
from fashionbert_tf.data import easytransfer_files
from fashionbert_tf.evaluation import easytransfer_eval
from fashionbert_tf.training import import_checkpoint

HIDDEN, HEADS, LAYERS, VOCAB, D = 16, 2, 2, 40, 24
TEXT = 12
EVAL_SCHEMA = (f"image_feature:float:{64 * D},image_mask:int:64,input_ids:int:{TEXT},"
               f"input_mask:int:{TEXT},segment_ids:int:{TEXT},nx_sent_labels:int:1,"
               "prod_desc:str:1,text_prod_id:str:1,image_prod_id:str:1,prod_img_id:str:1")
TRAIN_SCHEMA = (f"image_feature:float:{64 * D},image_mask:int:64,masked_patch_positions:int:5,"
                f"input_ids:int:{TEXT},input_mask:int:{TEXT},segment_ids:int:{TEXT},"
                "masked_lm_positions:int:10,masked_lm_ids:int:10,masked_lm_weights:float:10,"
                "nx_sent_labels:int:1")


def _line(values):
  """One line of their format: tab-separated fields, comma-separated values."""
  cells = []
  for value in values:
    if isinstance(value, str):
      cells.append(value)
    else:
      cells.append(",".join(repr(float(v)) if isinstance(v, (float, np.floating)) else str(int(v))
                            for v in np.asarray(value).reshape(-1)))
  return "\t".join(cells) + "\n"


def _text(rng, length):
  ids = np.zeros(TEXT, np.int64)
  mask = np.zeros(TEXT, np.int64)
  ids[:length] = rng.integers(5, VOCAB, size=length)
  ids[0], ids[length - 1] = 2, 3
  mask[:length] = 1
  return ids, mask


def _pair_rows(rng, query, candidates, direction, with_truth=True):
  """(rows, arrays) of one query: its ground truth (label 1) unless not `with_truth`, then
  negatives of other products."""
  rows = []
  products = ([query] if with_truth else []) + [f"{query}n{i}" for i in range(candidates)]
  for product in products:
    label = int(product == query)
    text_product, image_product = ((product, query) if direction == "image_to_text"
                                   else (query, product))
    ids, mask = _text(rng, int(rng.integers(4, TEXT + 1)))
    features = np.round(np.abs(rng.standard_normal(64 * D)), 4).astype(np.float32)
    rows.append(dict(image_feature=features, image_mask=np.ones(64, np.int64), input_ids=ids,
                     input_mask=mask, segment_ids=np.zeros(TEXT, np.int64), label=label,
                     desc=f"description of {text_product}", text_prod_id=text_product,
                     image_prod_id=image_product, prod_img_id=f"{image_product}_0.png"))
  return rows


def _write(path, rows):
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(_line([r["image_feature"], r["image_mask"], r["input_ids"], r["input_mask"],
                     r["segment_ids"], [r["label"]], r["desc"], r["text_prod_id"],
                     r["image_prod_id"], r["prod_img_id"]]))


def _their_rank_at_k(scores, rows, direction, k):
  """Their prediction_analysis, written plainly: group by the query's product id, stable-sort
  descending by score, hit when a label-1 pair is among the first min(k, n)."""
  queries = {}
  for score, row in zip(scores, rows):
    key = row["image_prod_id"] if direction == "image_to_text" else row["text_prod_id"]
    queries.setdefault(key, []).append((score, row["label"]))
  hits = 0
  for docs in queries.values():
    docs = sorted(docs, key=lambda d: d[0], reverse=True)
    hits += any(label for _, label in docs[:min(k, len(docs))])
  return hits / len(queries)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("authors_files")
  weights = ref.their_weights(hidden=HIDDEN, layers=LAYERS, vocab=VOCAB, feature_dim=D)
  prefix = ref.write_tf1_checkpoint(str(tmp / "released" / "model.ckpt"), weights,
                                    global_step=54198)
  run = import_checkpoint.import_checkpoint(
      prefix, str(tmp / "run"), num_attention_heads=HEADS,
      overrides=[f"eval.output_dir={tmp / 'eval'},eval.batch_size=16"])
  rng = np.random.default_rng(3)
  files, rows = {}, {}
  for direction, name in (("image_to_text", "img2txt"), ("text_to_image", "txt2img")):
    q = [_pair_rows(rng, f"{name}q{i}", 7, direction) for i in range(5)]
    q.append(_pair_rows(rng, f"{name}q5", 7, direction, with_truth=False))  # no ground truth
    q.append(_pair_rows(rng, f"{name}q0", 3, direction))   # q0 again: one query, 2 truths
    first = q[0][:4] + q[1] + q[2]
    second = q[0][4:] + q[3] + q[4] + q[5] + q[6]   # q0 split across the two files
    paths = [str(tmp / f"fashionbert-fashiongen-patch-eval-{name}__{i}") for i in range(2)]
    _write(paths[0], first)
    _write(paths[1], second)
    files[direction], rows[direction] = paths, first + second
  list_file = tmp / "eval_txt2img_list.list_csv"
  list_file.write_text("\n".join(files["text_to_image"]) + "\n")
  return dict(tmp=tmp, weights=weights, run=run, files=files, rows=rows, list_file=list_file)


def test_evaluate_cli_scores_their_files_as_their_analysis_does(setup, run_cli, capsys):
  run_yaml = os.path.join(setup["run"]["output_dir"], "params.yaml")
  run_cli(evaluate_cli, [
      "evaluate", f"--config={run_yaml}",
      f"--authors_img2txt={','.join(setup['files']['image_to_text'])}",
      f"--authors_txt2img={setup['list_file']}", f"--authors_schema={EVAL_SCHEMA}"])
  printed = capsys.readouterr().out
  with open(setup["tmp"] / "eval" / easytransfer_eval.RESULTS_FILE) as f:
    results = json.load(f)
  assert results["rank_by"] == "match_logit"
  scores = np.load(setup["tmp"] / "eval" / easytransfer_eval.SCORES_FILE)
  for direction in easytransfer_eval.DIRECTIONS:
    rows = setup["rows"][direction]
    batch = {k: np.stack([r[k] for r in rows]) for k in ("input_ids", "input_mask", "segment_ids")}
    logits, _ = ref.their_forward(
        setup["weights"], num_heads=HEADS, image_feature=np.stack(
            [r["image_feature"].reshape(64, D) for r in rows]),
        image_mask=np.ones([len(rows), 64], np.int32), **batch)
    np.testing.assert_allclose(scores[f"{direction}_logits"], logits, atol=2e-5, rtol=0)
    labels = np.array([r["label"] for r in rows])
    numbers = results[direction]
    assert numbers["accuracy"] == pytest.approx(np.mean(np.argmax(logits, 1) == labels))
    for k in (1, 5, 10, 100):
      assert numbers["ranked_by_match_logit"][f"rank@{k}"] == pytest.approx(
          _their_rank_at_k(logits[:, 1], rows, direction, k))
      p_match = ref.softmax_match(logits)
      assert numbers["ranked_by_p_match"][f"rank@{k}"] == pytest.approx(
          _their_rank_at_k(p_match, rows, direction, k))
    # The anomaly is counted, not hidden: 6 queries (q0 merged across files and repeats), one
    # without a ground truth, one with two; candidates per query 7 (q5), 8, 8+4.
    assert numbers["num_pairs"] == len(rows) == 5 * 8 + 7 + 4
    assert numbers["num_queries"] == 6
    assert numbers["queries_with_ground_truth"] == 5
    assert numbers["queries_without_ground_truth"] == 1
    assert numbers["queries_with_several_ground_truths"] == 1
    assert numbers["candidates_per_query"] == {"min": 7, "median": 8.0, "max": 12,
                                               "queries_with_exactly_101": 0}
    # Rank@100 over all queries is capped by the query without a ground truth.
    assert numbers["ranked_by_match_logit"]["rank@100"] == pytest.approx(5 / 6)
    assert numbers["ranked_by_match_logit"]["rank@100_queries_with_ground_truth"] == 1.0
  assert "authors' README" in printed and "91.34%" in printed
  assert "6 queries; 5 hold a ground truth (1 none, 1 several)" in printed


def test_ranking_by_logit_and_by_probability_can_differ():
  # logit 1 orders a > b, P(match) orders b > a (logit 0 differs).
  logits = np.array([[5.0, 3.0], [-1.0, 2.0], [0.0, -3.0]])
  labels = np.array([1, 0, 0])
  result = easytransfer_eval.analyse("image_to_text", logits, labels,
                                     np.array(["t0", "t1", "t2"]), np.array(["q", "q", "q"]))
  assert result["ranked_by_match_logit"]["rank@1"] == 1.0
  assert result["ranked_by_p_match"]["rank@1"] == 0.0


def test_ties_count_against_the_ground_truth():
  logits = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 0.5]])
  result = easytransfer_eval.analyse("text_to_image", logits, np.array([1, 0, 0]),
                                     np.array(["q", "q", "q"]), np.array(["i0", "i1", "i2"]))
  assert result["ranked_by_match_logit"]["rank@1"] == 0.0
  assert result["ranked_by_match_logit"]["rank@5"] == 1.0


def test_bad_lines_are_named_by_file_and_line(tmp_path):
  good = tmp_path / "good"
  rows = _pair_rows(np.random.default_rng(0), "q", 1, "image_to_text")
  _write(good, rows)
  lines = good.read_text().splitlines(keepends=True)
  fields = lines[1].split("\t")
  fields[2] = fields[2] + ",7"   # one input_ids value too many
  bad = tmp_path / "bad"
  bad.write_text(lines[0] + "\t".join(fields))
  with pytest.raises(easytransfer_files.EasyTransferFileError,
                     match=rf"{bad}:2: field input_ids has {TEXT + 1} values"):
    list(easytransfer_files.read_records([str(bad)], EVAL_SCHEMA))
  short = tmp_path / "short"
  short.write_text("1,2\t3\n")
  with pytest.raises(easytransfer_files.EasyTransferFileError, match=rf"{short}:1: 2 tab-sep"):
    list(easytransfer_files.read_records([str(short)], EVAL_SCHEMA))
  with pytest.raises(FileNotFoundError, match="no file"):
    easytransfer_files.expand_paths(str(tmp_path / "absent*"))


def _last_json(capsys):
  """The JSON object the command printed last (pretrain prints its summary)."""
  out = capsys.readouterr().out
  return out[out.rindex("\n{") + 1:] if "\n{" in out else out[out.index("{"):]


def test_their_training_sample_trains_the_imported_model(setup, tmp_path, run_cli, capsys):
  rng = np.random.default_rng(5)
  path = tmp_path / "fashionbert_fashiongen_patch_train_1K"
  with open(path, "w", encoding="utf-8") as f:
    for i in range(6):
      ids, mask = _text(rng, 8)
      f.write(_line([np.round(np.abs(rng.standard_normal(64 * D)), 3), np.ones(64, np.int64),
                     rng.integers(0, 64, 5), ids, mask, np.zeros(TEXT, np.int64),
                     [1, 2, 3, 0, 0, 0, 0, 0, 0, 0], rng.integers(5, VOCAB, 10),
                     [1.0, 1.0, 1.0] + [0.0] * 7, [i % 2]]))
  dataset = easytransfer_files.training_dataset([str(path)], batch_size=4, schema=TRAIN_SCHEMA,
                                                shuffle_buffer=0)
  batch = next(iter(dataset))
  assert batch["patch_features"].shape == (4, 64, D)
  assert batch["input_word_ids"].shape == (4, TEXT)
  assert batch["masked_patch_positions"].shape == (4, 5)
  np.testing.assert_array_equal(batch["tia_label"].numpy(), [0, 1, 0, 1])
  np.testing.assert_array_equal(batch["masked_lm_weights"].numpy()[:, :4], [[1, 1, 1, 0]] * 4)

  # Continued pretraining in a copy of the imported run: a warm start from the authors' weights
  # (step 0, Adam's moments afresh: the importer leaves theirs alone).
  continued = tmp_path / "continued"
  shutil.copytree(setup["run"]["output_dir"], continued)
  run_cli(pretrain_cli, [
      "pretrain", f"--config={continued / 'params.yaml'}", f"--authors_train_files={path}",
      f"--authors_train_schema={TRAIN_SCHEMA}",
      f"--params_override=train.model_dir={continued},train.train_steps=2,"
      "train.validation_steps=0,train.global_batch_size=4,train.warmup_steps=1"])
  summary = json.loads(_last_json(capsys))
  assert (summary["first_step"], summary["final_step"]) == (0, 2)
  logs = summary["train_logs"]
  assert all(np.isfinite(logs[k]) and logs[k] > 0 for k in ("mlm_loss", "mpm_loss", "tia_loss"))
  name = "model/patch_embedding/image_projector/.ATTRIBUTES/VARIABLE_VALUE"
  before = tf.train.load_checkpoint(setup["run"]["checkpoint"]).get_tensor(name)
  after = tf.train.load_checkpoint(summary["checkpoint"]).get_tensor(name)
  assert summary["checkpoint"].endswith("ckpt-2")
  assert np.all(np.isfinite(after)) and 0 < np.abs(after - before).max() < 0.1
