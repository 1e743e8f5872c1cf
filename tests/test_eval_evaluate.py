"""`fashionbert evaluate` end to end on tiny toy data: checkpoint, SavedModel, CLI, bad input.

The toy generator and prepare-data write a tiny validation split (14 products);
a tiny FashionBERT (2 layers, hidden 32, linear backbone) is saved as a training run would save it
(params.yaml + CheckpointManager over tf.train.Checkpoint(model=..., step=...)).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.modeling.hyperparams import params_dict

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import candidates as candidates_lib
from fashionbert_tf.data import prepare
from fashionbert_tf.data import records
from fashionbert_tf.data import tokenization
from fashionbert_tf.data.toy import fashion_gen as toy_fashiongen
from fashionbert_tf.evaluation import evaluate
from fashionbert_tf.evaluation import metrics
from fashionbert_tf.evaluation import pair_scoring
from fashionbert_tf.evaluation import rank_at_k as retrieval
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.modeling import fused_inference
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.serving import export

STEP = 7


def overrides(root):
  return [
      "model.encoder_format=none,model.num_layers=2,model.hidden_size=32,"
      "model.num_attention_heads=2,model.intermediate_size=64,model.backbone=linear,"
      "model.feature_dim=16",
      f"data.train_hdf5={root}/train.h5,data.validation_hdf5={root}/validation.h5,"
      f"data.tfrecord_dir={root}/tfrecords,data.candidates_file={root}/tfrecords/candidates.json,"
      "data.num_text_queries=5,data.num_image_queries=6,data.num_candidates=10,data.num_shards=2",
      f"train.model_dir={root}/run,eval.batch_size=24,eval.images_per_step=8",
  ]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("eval"))
  toy_fashiongen.make_toy_fashiongen(f"{root}/train.h5", f"{root}/validation.h5",
                                     num_train_products=4, num_validation_products=14, seed=3,
                                     num_empty_descriptions=0)
  config = experiment_config.load_config(None, overrides(root))
  prepare.prepare_dataset(config.data)
  model = model_builder.build_fashionbert(config.model)
  os.makedirs(config.train.model_dir)
  params_dict.save_params_dict_to_yaml(config, os.path.join(config.train.model_dir,
                                                            "params.yaml"))
  checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(STEP, dtype=tf.int64))
  tf.train.CheckpointManager(checkpoint, config.train.model_dir, 2).save(checkpoint_number=STEP)
  return {"root": root, "config": config, "model": model}


@pytest.fixture(scope="module")
def checkpoint_results(run):
  return evaluate.run_evaluation(run["config"])


def test_evaluation_writes_table_json_and_tensorboard(run, checkpoint_results, capsys):
  results = checkpoint_results
  assert results["source"]["checkpoint"].endswith(f"ckpt-{STEP}")
  for direction in ("image_to_text", "text_to_image"):
    numbers = results[direction]
    for key in ("accuracy", "rank@1", "rank@5", "rank@10"):
      assert 0.0 <= numbers[key] <= 1.0, (direction, key)
    assert numbers["num_candidates"] == 11
    assert numbers["rank@1"] <= numbers["rank@5"] <= numbers["rank@10"]
  assert results["image_to_text"]["num_queries"] == 6
  assert results["text_to_image"]["num_queries"] == 5
  # The overall TIA accuracy is the two directions' accuracies weighted by their pair counts.
  pairs = [results[d]["num_tia_pairs"] for d in ("image_to_text", "text_to_image")]
  accuracies = [results[d]["accuracy"] for d in ("image_to_text", "text_to_image")]
  assert results["tia_accuracy"] == pytest.approx(np.dot(pairs, accuracies) / sum(pairs))
  eval_dir = os.path.join(run["config"].train.model_dir, "eval")
  with open(os.path.join(eval_dir, "results.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert saved["image_to_text"]["rank@5"] == results["image_to_text"]["rank@5"]
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(eval_dir))
  table = evaluate.format_table(results, [1, 5, 10]).splitlines()
  assert table[0].split() == ["Evaluation", "Approach", "Accuracy", "Rank@1", "Rank@5",
                              "Rank@10"]
  assert table[1].startswith("Image-to-Text") and table[2].startswith("Text-to-Image")
  assert all(line.split()[1] == "FashionBERT-2L" for line in table[1:])
  assert all(cell.endswith("%") for line in table[1:] for cell in line.split()[2:])


def test_evaluation_saves_the_scored_retrieval_grids(run, checkpoint_results):
  """retrieval_scores.npz (what gallery.py draws) holds the saved candidate sets as [Q, C] grids
  and the very scores behind the reported Rank@K."""
  path = checkpoint_results["retrieval_scores_file"]
  assert path == os.path.join(run["config"].train.model_dir, "eval", "retrieval_scores.npz")
  sets = candidates_lib.load_candidates(run["config"].data.candidates_file)
  with np.load(path) as saved:
    assert int(saved["step"]) == STEP
    for direction, candidate_side, query_side in (("image_to_text", "text_ids", "image_ids"),
                                                  ("text_to_image", "image_ids", "text_ids")):
      entries = sets[direction]
      np.testing.assert_array_equal(saved[f"{direction}_{candidate_side}"],
                                    [entry["candidates"] for entry in entries])
      np.testing.assert_array_equal(saved[f"{direction}_{query_side}"],
                                    [[entry["query"]] * 11 for entry in entries])
      np.testing.assert_array_equal(saved[f"{direction}_ground_truth"],
                                    [entry["ground_truth_index"] for entry in entries])
      scores = saved[f"{direction}_scores"]
      assert scores.shape == (len(entries), 11)
      for k, value in metrics.rank_at_k(scores, saved[f"{direction}_ground_truth"]).items():
        assert value == checkpoint_results[direction][f"rank@{k}"], (direction, k)


def test_reused_features_give_the_scores_of_pair_by_pair_scoring(run, checkpoint_results):
  """The work-reusing scorer (dedup, grouping by image, length-sorted VSL batches) returns, for
  every pair, the probability of scoring that pair alone; the reported Rank@K are those of its
  score grids."""
  config, model = run["config"], run["model"]
  file_pattern = os.path.join(config.data.tfrecord_dir, "validation-?????-of-?????.tfrecord")
  table = evaluate.read_record_table(file_pattern)
  tia_plans = retrieval.plan_tia(table, config.eval.seed, config.eval.max_tia_pairs)
  retrieval_plans = retrieval.plan_retrieval(
      candidates_lib.load_candidates(config.data.candidates_file), table)
  parts = [(p.text_ids, p.image_ids) for p in tia_plans.values()]
  parts += [(p.text_ids.reshape(-1), p.image_ids.reshape(-1)) for p in retrieval_plans.values()]
  text_ids = np.concatenate([t for t, _ in parts])
  image_ids = np.concatenate([i for _, i in parts])
  tokenizer = tokenization.build_tokenizer(config.data)
  scorer = scoring.KerasPairScorer(model, feature_dim=16)
  reused, stats = pair_scoring.score_pairs(
      scorer, table, tokenizer, text_ids, image_ids, file_pattern,
      batch_size=config.eval.batch_size, images_per_step=config.eval.images_per_step)
  assert stats["images"] < stats["distinct_pairs"] < stats["pairs"]

  images = {int(r["record_id"]): r["image"].numpy() for r in records.read_records(file_pattern)}
  texts, features, alone = {}, {}, []
  for text_record, image_record in zip(text_ids, image_ids):  # one pair per model call
    text = table.description_of(text_record)
    if text not in texts:
      texts[text] = tokenization.text_to_model_inputs(tokenizer, tf.constant([text]))
    if image_record not in features:
      features[image_record] = scorer.patch_features(images[image_record][None])
    alone.append(scorer.match_probability(*texts[text], features[image_record])[0])
  np.testing.assert_allclose(reused, alone, atol=1e-5, rtol=0)

  # run_evaluation scores this same list in the same batches: its Rank@K are these grids'.
  offset = sum(len(p.labels) for p in tia_plans.values())
  for direction, plan in retrieval_plans.items():
    grid = reused[offset:offset + plan.text_ids.size].reshape(plan.text_ids.shape)
    offset += plan.text_ids.size
    expected = metrics.rank_at_k(grid, plan.ground_truth_index, (1, 5, 10))
    for k in (1, 5, 10):
      assert checkpoint_results[direction][f"rank@{k}"] == expected[k], (direction, k)


def test_export_cli_then_saved_model_evaluation(run, checkpoint_results, run_cli, capsys):
  """`fashionbert export` of the run's latest checkpoint, then evaluate the SavedModel."""
  from fashionbert_tf.cli import export as export_cli  # pylint: disable=g-import-not-at-top
  export_dir = os.path.join(run["root"], "exports")
  run_cli(export_cli, ["fashionbert export", "--config=", "--version=1",
                       f"--export_dir={export_dir}"]
          + [f"--params_override={o}" for o in overrides(run["root"])])
  path = os.path.join(export_dir, "1")
  assert f"saved_model_cli show --dir {path} --all" in capsys.readouterr().out
  assert os.path.exists(os.path.join(path, export.PARAMS_COPY))
  saved_config = experiment_config.load_config(
      None, overrides(run["root"]) + [f"eval.output_dir={run['root']}/eval_saved_model"])
  results = evaluate.run_evaluation(saved_config, saved_model=path)
  assert results["source"] == {"saved_model": path, "precision": "float32", "jit_compile": False,
                               "length_bucket": 0}
  assert os.path.exists(os.path.join(run["root"], "eval_saved_model", "results.json"))
  for direction in ("image_to_text", "text_to_image"):
    for key in ("accuracy", "rank@1", "rank@5", "rank@10"):
      assert 0.0 <= results[direction][key] <= 1.0
    assert results[direction]["num_queries"] == checkpoint_results[direction]["num_queries"]
  # Same pairs, same probabilities (within float noise) as the restored Keras model; comparing
  # the probabilities rather than the metrics keeps near-ties from flipping the test.
  file_pattern = os.path.join(run["config"].data.tfrecord_dir, "validation-*")
  table = evaluate.read_record_table(file_pattern)
  plan = retrieval.plan_tia(table, seed=0)["text_to_image"]
  tokenizer = tokenization.build_tokenizer(run["config"].data)
  from_saved, _ = pair_scoring.score_pairs(
      scoring.SavedModelPairScorer(path), table, tokenizer, plan.text_ids, plan.image_ids,
      file_pattern, batch_size=16, images_per_step=8)
  from_keras, _ = pair_scoring.score_pairs(
      scoring.KerasPairScorer(run["model"], 16), table, tokenizer, plan.text_ids, plan.image_ids,
      file_pattern, batch_size=16, images_per_step=8)
  np.testing.assert_allclose(from_saved, from_keras, atol=1e-5, rtol=0)


def test_cli_evaluate_prints_the_table(run, run_cli, capsys):
  from fashionbert_tf.cli import evaluate as evaluate_cli  # pylint: disable=g-import-not-at-top
  root = run["root"]
  argv = ["fashionbert evaluate", "--config="]
  argv += [f"--params_override={o}" for o in overrides(root)]
  argv += [f"--params_override=eval.output_dir={root}/eval_cli,eval.max_tia_pairs=10",
           f"--checkpoint={run['config'].train.model_dir}"]
  run_cli(evaluate_cli, argv)
  printed = capsys.readouterr().out
  assert "Image-to-Text" in printed and "Text-to-Image" in printed and "Rank@10" in printed
  with open(os.path.join(root, "eval_cli", "results.json"), encoding="utf-8") as f:
    results = json.load(f)
  assert results["image_to_text"]["num_tia_pairs"] == 10
  source = results["source"]
  assert (f"FashionBERT evaluation ({source['checkpoint']}, {source['precision']}):\n"
          in printed), printed
  assert "{" not in printed.split("FashionBERT evaluation (")[1].splitlines()[0]


def test_the_table_header_names_what_was_scored():
  assert evaluate.describe_source({"checkpoint": "runs/toy/ckpt-1100", "step": 1100,
                                   "precision": "bfloat16", "jit_compile": False}) == (
                                       "runs/toy/ckpt-1100, bfloat16")
  assert evaluate.describe_source({"saved_model": "exports/toy/3", "precision": "float32",
                                   "jit_compile": True, "length_bucket": 16}) == (
                                       "exports/toy/3 (SavedModel), float32, XLA")


def test_stale_candidate_file_is_a_clear_error(run):
  config = run["config"]
  candidate_sets = candidates_lib.load_candidates(config.data.candidates_file)
  candidate_sets["text_to_image"][2]["candidates"][4] = 999999
  path = os.path.join(run["root"], "stale_candidates.json")
  candidates_lib.save_candidates(candidate_sets, path)
  stale = experiment_config.load_config(None, overrides(run["root"]) + [
      f"data.candidates_file={path},eval.output_dir={run['root']}/eval_stale"])
  with pytest.raises(ValueError, match="text_to_image query 2 names record 999999"):
    evaluate.run_evaluation(stale)


def test_bfloat16_evaluation_matches_float32_and_restores_the_policy(run, checkpoint_results):
  """eval.mixed_precision=mixed_bfloat16 scores with bfloat16 weights and matmuls: P(match) within
  0.01 of float32 on every retrieval pair; the global Keras policy is unchanged. (Rank@K: see
  test_fast_evaluations_give_the_float32_ranks, on a model whose scores are not near-ties.)"""
  bf16_config = experiment_config.load_config(None, overrides(run["root"]) + [
      f"eval.mixed_precision=mixed_bfloat16,eval.output_dir={run['root']}/eval_bf16"])
  before = tf_keras.mixed_precision.global_policy().name
  scorer, source, _ = evaluate.build_scorer(bf16_config)
  assert source["precision"] == "bfloat16"
  assert isinstance(scorer.model, fused_inference.FusedScoringModel)
  assert scorer.model.precision == "bfloat16"
  assert tf_keras.mixed_precision.global_policy().name == before
  results = evaluate.run_evaluation(bf16_config)
  with np.load(checkpoint_results["retrieval_scores_file"]) as exact, \
       np.load(results["retrieval_scores_file"]) as fast:
    for direction in ("image_to_text", "text_to_image"):
      np.testing.assert_allclose(fast[f"{direction}_scores"], exact[f"{direction}_scores"],
                                 atol=0.01)
      assert not np.array_equal(fast[f"{direction}_scores"], exact[f"{direction}_scores"])


def test_evaluation_through_tfds_gives_the_same_results(run, checkpoint_results, tmp_path,
                                                       monkeypatch):
  """data.source=tfds: the same toy data built by the fashion_gen builder and read by evaluate
  through builder.as_dataset give exactly the numbers of the TFRecords."""
  import shutil  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data.sources import fashion_gen_tfds as tfds_source  # pylint: disable=g-import-not-at-top
  reads = []
  read_records = tfds_source.read_records
  monkeypatch.setattr(tfds_source, "read_records",
                      lambda *args: reads.append(args[1]) or read_records(*args))
  config = experiment_config.load_config(None, overrides(run["root"]) + [
      f"data.source=tfds,data.tfds_config=toy,data.tfds_data_dir={tmp_path}/tfds,"
      f"data.tfrecord_dir={tmp_path}/prepared,data.candidates_file={tmp_path}/prepared/c.json,"
      "data.toy_num_train_products=4,data.toy_num_validation_products=14,data.toy_seed=3,"
      f"data.toy_num_empty_descriptions=0,train.model_dir={tmp_path}/run"])
  prepare.prepare_dataset(config.data)
  shutil.copytree(run["config"].train.model_dir, config.train.model_dir,
                  ignore=shutil.ignore_patterns("eval"))
  results = evaluate.run_evaluation(config)
  assert reads and set(reads) == {"validation"}      # table and images via builder.as_dataset
  assert results["validation_records"] == checkpoint_results["validation_records"]
  assert results["tia_accuracy"] == checkpoint_results["tia_accuracy"]
  for direction in ("image_to_text", "text_to_image"):
    assert results[direction] == checkpoint_results[direction], direction


MARGIN = 0.002


def ground_truth_ranks(scores, ground_truth, margin=0.0):
  """Per query [Q]: 1 + the candidates scored above the ground truth by more than `margin`, and
  1 + those scored at least its score minus `margin` (the rank range over near-ties)."""
  truth = scores[np.arange(len(scores)), ground_truth][:, None]
  above = (scores > truth + margin).sum(axis=1)
  at_least = (scores >= truth - margin).sum(axis=1) - 1
  return above + 1, at_least + 1


def test_fast_evaluation_gives_the_float32_ranks(run):
  """bfloat16 under XLA (weights in bfloat16, texts padded to buckets of 16, batches to powers of
  two): P(match) within 0.01 of float32 on every pair, and the same ranks ties aside: each
  query's ground truth ranks where it ranks in float32, give or take the candidates whose float32
  score is within MARGIN of its own.

  The run's untrained model scores all candidates of a query within ~1e-5 of each other (ranks
  are pure ties), so this test's model has larger weights (as training gives): its candidates'
  scores spread over ~0.01.
  """
  root = run["root"]
  tf_keras.utils.set_random_seed(11)
  model = model_builder.build_fashionbert(run["config"].model)
  for variable in model.trainable_variables:
    if len(variable.shape) >= 2:
      variable.assign(variable * 4.0)
  model.tia_head.classifier.kernel.assign(model.tia_head.classifier.kernel * 3.0)
  model_dir = os.path.join(root, "run_spread")
  os.makedirs(model_dir)
  params_dict.save_params_dict_to_yaml(run["config"], os.path.join(model_dir, "params.yaml"))
  checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(STEP, dtype=tf.int64))
  tf.train.CheckpointManager(checkpoint, model_dir, 1).save(checkpoint_number=STEP)

  def evaluate_with(name, settings):
    config = experiment_config.load_config(None, overrides(root) + [
        f"train.model_dir={model_dir},eval.output_dir={root}/eval_{name},eval.max_tia_pairs=8,"
        + settings])
    results = evaluate.run_evaluation(config)
    with np.load(results["retrieval_scores_file"]) as grids:
      return results, {key: grids[key] for key in grids.files}

  _, exact = evaluate_with("f32", "eval.mixed_precision=float32")
  results, fast = evaluate_with("bf16_xla", "eval.mixed_precision=bfloat16,eval.jit_compile=true")
  assert results["source"]["precision"] == "bfloat16"
  assert (results["source"]["jit_compile"], results["source"]["length_bucket"]) == (True, 16)
  for direction in retrieval.DIRECTIONS:
    scores, truth = fast[f"{direction}_scores"], exact[f"{direction}_ground_truth"]
    assert np.ptp(exact[f"{direction}_scores"]) > 0.005
    np.testing.assert_allclose(scores, exact[f"{direction}_scores"], atol=0.01)
    low, high = ground_truth_ranks(exact[f"{direction}_scores"], truth, margin=MARGIN)
    rank, _ = ground_truth_ranks(scores, truth)
    assert np.all((low <= rank) & (rank <= high)), (direction, low, rank, high)
