"""Search fine-tuning (paper 3.4): Q/T/I layout and VSL, segment-table mapping, the three variants
train, resume, restore and score, the Table 4 evaluation, and AUC against a brute-force reference.

One tiny pretraining checkpoint (encoder_format none, 3 layers, hidden 32, linear backbone D=12)
over the session's tiny toy Fashion-Gen (conftest `toy_data_config`), tiny seeded search logs.
"""

import copy
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import search_logs
from fashionbert_tf.data import tokenization
from fashionbert_tf.data.toy import search_log_generator as toy_search_logs
from fashionbert_tf.evaluation import metrics
from fashionbert_tf.modeling import feature_statistics
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.search import catalogue as catalogue_lib
from fashionbert_tf.search import click_evaluation as evaluate
from fashionbert_tf.search import click_scoring as scoring
from fashionbert_tf.search import finetune
from fashionbert_tf.search import layout
from fashionbert_tf.search import search_model_builder as search_builder
from fashionbert_tf.search import search_model_builder as restore
from fashionbert_tf.training import trainer

FEATURE_DIM = 12


def _model_override(vocab_size):
  return ("model.encoder_format=none,model.num_layers=3,model.hidden_size=32,"
          "model.num_attention_heads=2,model.intermediate_size=64,model.backbone=linear,"
          f"model.feature_dim={FEATURE_DIM},model.vocab_size={vocab_size}")


def make_setup(toy_data_config, root, *model_overrides):
  """A tiny pretraining run in `root` (checkpoint + params.yaml, statistics set) and tiny search
  logs; `model_overrides` (override strings) change the pretrained model's config."""
  vocab_size = len(tokenization.read_vocab(toy_data_config.vocab_file))
  pretrain_dir = os.path.join(root, "pretrain")
  config = experiment_config.load_config(None, [_model_override(vocab_size),
                                                f"train.model_dir={pretrain_dir}",
                                                *model_overrides])
  config.data = copy.deepcopy(toy_data_config)
  tf.random.set_seed(0)
  model = model_builder.build_fashionbert(config.model)
  model.patch_feature_normalization.set_statistics(feature_statistics.FeatureStatistics(
      mean=np.linspace(0.1, 0.5, FEATURE_DIM).astype(np.float32),
      std=np.linspace(0.5, 1.5, FEATURE_DIM).astype(np.float32), num_images=10,
      num_patches=640, fingerprint="test"))
  tf.train.CheckpointManager(tf.train.Checkpoint(model=model), pretrain_dir, 2,
                             checkpoint_name="ckpt").save(5)
  trainer.save_params(config, pretrain_dir)
  products = toy_search_logs.toy_catalogue_products(24, 12, 3, "both", num_empty_descriptions=1)
  logs_dir = os.path.join(root, "logs")
  toy_search_logs.write_toy_search_logs(logs_dir, products, toy_search_logs.ToySearchLogSettings(
      num_sessions=60, impressions_per_query=6, seed=1))
  return {"root": root, "pretrain_dir": pretrain_dir, "pretrained": model,
          "vocab_size": vocab_size, "data": toy_data_config, "logs_dir": logs_dir}


@pytest.fixture(scope="module")
def setup(toy_data_config, tmp_path_factory):
  """A tiny pretraining run (checkpoint + params.yaml, statistics set) and tiny search logs."""
  return make_setup(toy_data_config, str(tmp_path_factory.mktemp("search")))


def search_config(setup, variant, *overrides, steps=2):
  config = experiment_config.load_config(None, [
      _model_override(setup["vocab_size"]),
      f"search.pretrained_checkpoint={setup['pretrain_dir']},search.logs_dir={setup['logs_dir']},"
      f"search.runs_dir={setup['root']}/runs,search.baseline_init=pretrained,"
      f"model.search_variant={variant},model.num_layers=2,search.latency_examples=2,"
      f"search.latency_warmup=1,train.train_steps={steps},train.global_batch_size=8,"
      "train.warmup_steps=1,train.checkpoint_every_steps=100,train.validation_every_steps=100,"
      "train.log_every_steps=1,train.learning_rate=1e-3,train.max_checkpoints_to_keep=5",
      *overrides])
  config.data = copy.deepcopy(setup["data"])
  return config


def test_query_title_layout_segments_and_vsl(setup):
  tokenizer = tokenization.build_tokenizer(setup["data"])
  encoder = layout.QueryTitleEncoder(tokenizer, max_query_length=4, max_title_length=6,
                                     title_segment=layout.title_segment_id("fashionbert"))
  queries = ["red shirt", "long sleeve navy dress with pocket"]   # 2nd: cut to 4 pieces
  titles = ["black shirt", "navy dress"]
  vsl = {k: v.numpy() for k, v in encoder.encode(queries, titles).items()}
  pieces = [[int(t) for t in tokenizer.tokenize([text]).merge_dims(1, 2)[0].numpy()]
            for text in queries + titles]
  cls, sep = tokenizer.cls_id, tokenizer.sep_id
  row0 = [cls] + pieces[0] + [sep] + pieces[2] + [sep]
  assert vsl["input_word_ids"][0, :len(row0)].tolist() == row0
  query_length = 2 + len(pieces[0])
  assert vsl["input_type_ids"][0, :len(row0)].tolist() == (
      [0] * query_length + [2] * (len(row0) - query_length))
  assert vsl["input_mask"][0].tolist() == [1] * len(row0) + [0] * (vsl["input_mask"].shape[1] -
                                                                   len(row0))
  # VSL: padded to the batch's longest row only; its query keeps whole words within 4 pieces.
  assert vsl["input_word_ids"].shape[1] == int(vsl["input_mask"].sum(1).max())
  assert 2 + 2 <= vsl["input_type_ids"][1].tolist().count(0) - (vsl["input_mask"][1] == 0).sum() <= 6
  segments = layout.full_segment_ids(vsl["input_type_ids"], with_image=True).numpy()
  assert segments.shape[1] == vsl["input_word_ids"].shape[1] + 64
  assert (segments[:, -64:] == layout.IMAGE_SEGMENT_ID).all()
  padded = {k: v.numpy() for k, v in encoder.encode(queries, titles, pad_to=448).items()}
  assert padded["input_word_ids"].shape == (2, 448)
  width = vsl["input_word_ids"].shape[1]
  for key in vsl:
    assert (padded[key][:, :width] == vsl[key]).all() and (padded[key][:, width:] == 0).all()
  text_only = layout.QueryTitleEncoder(tokenizer, 4, 6, layout.title_segment_id("oribert"))
  assert set(text_only.encode(queries, titles)["input_type_ids"].numpy().ravel()) == {0, 1}


@pytest.mark.parametrize("init, expected_row, head", [("text", 0, "tia"), ("mean", None, "random")])
def test_segment_table_mapped_to_three_rows_and_first_layers_taken(setup, init, expected_row,
                                                                   head):
  config = search_config(setup, "fashionbert", f"search.title_segment_init={init},"
                         f"search.click_head_init={head}")
  model, model_config = search_builder.build_search_model(config)
  tia_kernel = setup["pretrained"].tia_head.classifier.kernel.numpy()
  click_kernel = model.click_head.kernel.numpy()
  if head == "tia":
    np.testing.assert_array_equal(click_kernel, tia_kernel)
  else:   # fresh: BERT's truncated normal, not the TIA classifier
    assert click_kernel.shape == tia_kernel.shape and not np.allclose(click_kernel, tia_kernel)
    assert 0.0 < click_kernel.std() < 0.05
  assert model_config.num_layers == 2 and model.encoder.num_layers == 2
  source = setup["pretrained"].encoder.type_embedding_layer.embeddings.numpy()
  table = model.encoder.type_embedding_layer.embeddings.numpy()
  assert table.shape == (3, source.shape[1])
  np.testing.assert_array_equal(table[:2], source)
  title = source[0] if expected_row == 0 else source.mean(axis=0)
  np.testing.assert_allclose(table[2], title, rtol=1e-6)
  # The first 2 of the checkpoint's 3 layers.
  def layer_kernel(encoder, index):
    return [v for v in encoder.variables
            if f"transformer/layer_{index}/self_attention/query/kernel" in v.name][0].numpy()
  for index in (0, 1):
    np.testing.assert_array_equal(layer_kernel(model.encoder, index),
                                  layer_kernel(setup["pretrained"].encoder, index))
  np.testing.assert_array_equal(model.patch_feature_normalization.std.numpy(),
                                setup["pretrained"].patch_feature_normalization.std.numpy())


def _without_encoder_dropout(model):
  """Sets every Dropout layer's rate to 0 (the encoder's), so training=True is deterministic
  except for image dropout."""
  for layer in model.submodules:
    if isinstance(layer, tf_keras.layers.Dropout):
      layer.rate = 0.0
  return model


@pytest.mark.parametrize("variant", ["fashionbert", "bert_img"])
def test_image_dropout_hides_the_image_of_a_fraction_of_training_impressions(setup, variant):
  """search.image_dropout_rate: in training each impression scores either as with its image or as
  with the image hidden (FashionBERT: patches masked out of attention; BERT+IMG: image half of the
  head input zeroed), hidden at the configured rate; inference always sees the image."""
  config = search_config(setup, variant, "search.image_dropout_rate=0.5")
  model, _ = search_builder.build_search_model(config)
  _without_encoder_dropout(model)
  # The tiny model's fresh head moves logits by ~1e-4: scaled so image / no image differ clearly.
  model.click_head.kernel.assign(model.click_head.kernel * 100.0)
  tokenizer = tokenization.build_tokenizer(setup["data"])
  encoder = layout.QueryTitleEncoder(tokenizer, 4, 6, layout.title_segment_id(variant))
  count = 400
  inputs = encoder.encode(["red striped shirt"] * count, ["black shirt", "red shirt"] * (count // 2))
  tf.random.set_seed(3)
  inputs["patch_features"] = tf.random.normal([count, 64, FEATURE_DIM])
  shown = model(inputs, training=False)["click_logits"].numpy()
  if variant == "fashionbert":
    patches = model.patch_embedding(model.patch_features(inputs))
    outputs = model.encoder(dict(input_word_ids=inputs["input_word_ids"],
                                 input_mask=inputs["input_mask"],
                                 input_type_ids=inputs["input_type_ids"], dense_inputs=patches,
                                 dense_mask=tf.zeros([count, 64], tf.int32)), training=False)
    hidden = model.click_head(outputs["pooled_output"]).numpy()
  else:
    pooled = model.encoder({k: inputs[k] for k in ("input_word_ids", "input_mask",
                                                   "input_type_ids")})["pooled_output"]
    hidden = model.click_head(tf.concat([pooled, tf.zeros_like(pooled)], -1)).numpy()
  assert (np.abs(shown - hidden).max(axis=1) > 1e-4).all()   # the image changes every score
  trained_logits = model(inputs, training=True)["click_logits"].numpy()
  is_shown = np.abs(trained_logits - shown).max(axis=1) < 1e-5
  is_hidden = np.abs(trained_logits - hidden).max(axis=1) < 1e-5
  assert (is_shown ^ is_hidden).all()
  assert abs(is_hidden.mean() - 0.5) < 0.1                   # 400 draws: sd 0.025
  np.testing.assert_allclose(model(inputs, training=False)["click_logits"].numpy(), shown,
                             atol=1e-6)
  model.image_dropout_rate = 0.0                             # off: training sees every image
  np.testing.assert_allclose(model(inputs, training=True)["click_logits"].numpy(), shown,
                             atol=1e-5)
  with pytest.raises(ValueError, match="search.image_dropout_rate = 1.0"):
    search_config(setup, variant, "search.image_dropout_rate=1.0").validate()


@pytest.fixture(scope="module")
def trained(setup):
  """The three variants fine-tuned 2 steps (fashionbert: 1 step, then resumed to 2)."""
  runs = {}
  config = search_config(setup, "fashionbert", steps=1)
  runs["fashionbert_first"] = finetune.run_finetuning(config)
  runs["fashionbert"] = finetune.run_finetuning(search_config(setup, "fashionbert", steps=2))
  for variant in ("oribert", "bert_img"):
    runs[variant] = finetune.run_finetuning(search_config(setup, variant))
  return runs


def test_variants_train_with_finite_loss_and_change_weights(setup, trained):
  source = setup["pretrained"].encoder
  for variant in ("fashionbert", "oribert", "bert_img"):
    summary = trained[variant]
    assert summary["variant"] == variant and summary["num_layers"] == 2
    assert np.isfinite(summary["train_logs"]["loss"])
    assert 0.0 <= summary["validation_logs"]["accuracy"] <= 1.0
    model, run_config, path = restore.restore_search_model(summary["model_dir"])
    assert run_config.model.search_variant == variant and path.endswith(
        f"ckpt-{summary['final_step']}")
    before = source.get_embedding_table().numpy()
    after = model.encoder.get_embedding_table().numpy()
    assert np.abs(after - before).max() > 1e-5, variant
    assert os.path.isdir(os.path.join(summary["model_dir"], "train"))  # TensorBoard


def test_fresh_runs_validate_at_step_0_and_resumed_runs_do_not(trained):
  """Step 0's validation: where fine-tuning starts (the TIA head's zero-shot ranking)."""
  assert [e["step"] for e in trained["fashionbert_first"]["validation_history"]] == [0, 1]
  assert [e["step"] for e in trained["fashionbert"]["validation_history"]] == [2]
  assert [e["step"] for e in trained["oribert"]["validation_history"]] == [0, 2]


def test_finetune_resumes_from_its_checkpoint(trained):
  first, resumed = trained["fashionbert_first"], trained["fashionbert"]
  assert first["final_step"] == 1 and first["checkpoint"].endswith("ckpt-1")
  assert resumed["first_step"] == 1 and resumed["final_step"] == 2
  assert resumed["initialization"].startswith("resumed from") and "ckpt-1" in resumed[
      "initialization"]
  reader = tf.train.load_checkpoint(resumed["checkpoint"])
  assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 2


def test_reduce_from_a_finetuned_run_takes_its_first_layers_and_heads(setup, trained):
  """search.reduce_from: the paper's 2-layer model cut from the fine-tuned deeper one."""
  run_dir = trained["fashionbert"]["model_dir"]
  source, _, _ = restore.restore_search_model(run_dir)
  config = search_config(setup, "fashionbert", f"search.reduce_from={run_dir},model.num_layers=1")
  model, _ = search_builder.build_search_model(config)
  assert model.encoder.num_layers == 1
  for target, origin in ((model.encoder.transformer_layers[0], source.encoder.transformer_layers[0]),
                         (model.click_head, source.click_head),
                         (model.patch_embedding, source.patch_embedding),
                         (model.encoder.type_embedding_layer,
                          source.encoder.type_embedding_layer)):
    assert len(target.variables) == len(origin.variables) > 0
    for a, b in zip(target.variables, origin.variables):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  # Fine-tuned weights, not the pretraining checkpoint's.
  assert not np.array_equal(model.encoder.get_embedding_table().numpy(),
                            setup["pretrained"].encoder.get_embedding_table().numpy())
  with pytest.raises(ValueError, match="fewer than model.num_layers=3"):
    search_builder.build_search_model(search_config(
        setup, "fashionbert", f"search.reduce_from={run_dir},model.num_layers=3"))
  with pytest.raises(ValueError, match="a fashionbert run; this model is oribert"):
    search_builder.build_search_model(search_config(setup, "oribert",
                                                    f"search.reduce_from={run_dir}"))


def test_scorer_matches_model_and_padding_does_not_change_scores(setup, trained):
  model, run_config, _ = restore.restore_search_model(trained["fashionbert"]["model_dir"])
  sessions = search_logs.read_split(setup["logs_dir"], "test")
  examples = search_logs.impression_examples(sessions[:1])
  catalogue = catalogue_lib.compute_catalogue_features(model.patch_feature_extractor, run_config,
                                                       set(examples.product_id.tolist()))
  scorer = scoring.ClickScorer(model, scoring.query_title_encoder(run_config, "fashionbert"),
                               catalogue)
  batched = scorer.score(examples.query, examples.title, examples.product_id, batch_size=4)
  single = np.array([scorer.score([q], [t], [p])[0] for q, t, p in
                     zip(examples.query, examples.title, examples.product_id)])
  padded = scorer.score(examples.query, examples.title, examples.product_id, batch_size=4,
                        pad_to=layout.PADDED_TEXT_LENGTH)
  assert batched.shape == (len(examples),) and ((batched > 0) & (batched < 1)).all()
  np.testing.assert_allclose(batched, single, atol=1e-5)
  np.testing.assert_allclose(batched, padded, atol=1e-5)
  # The image matters to fashionbert: another product's image changes P(click).
  swapped = scorer.score(examples.query, examples.title, examples.product_id[::-1])
  assert np.abs(swapped - batched).max() > 1e-6


def test_evaluate_search_writes_table4(setup, trained, tmp_path):
  config = search_config(setup, "fashionbert", f"search.output_dir={tmp_path}",
                         "search.evaluate_layers=[2],search.bootstrap_resamples=50")
  result = evaluate.run_search_evaluation(config)
  rows = {row["variant"]: row for row in result["rows"]}
  assert set(rows) == {"oribert", "bert_img", "fashionbert"}
  examples = search_logs.impression_examples(search_logs.read_split(setup["logs_dir"], "test"))
  assert result["test_examples"] == len(examples)
  for row in rows.values():
    assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["auc"] <= 1.0
    assert row["latency_ms_vsl"] > 0 and row["latency_ms_padded"] > 0
    assert row["max_abs_probability_difference_padded_vs_vsl"] < 1e-4
  assert rows["fashionbert"]["sequence_length_padded"] == 512
  assert "2L-FashionBERT(VSL)" in result["table"] and "2L-BERT+IMG" in result["table"]
  # Toy logs: which attributes each model ranks by, from the same probabilities as its AUC.
  assert rows["oribert"]["attribute_auc"]
  for row in rows.values():
    for cell in row["attribute_auc"].values():
      assert 0.0 <= cell["auc"] <= 1.0 and cell["impressions"] > 0
  assert "ranks by" in result["table"]
  # The bootstrap: an interval around each row's AUC, the paper's ordering for 2 layers.
  for row in rows.values():
    interval = result["bootstrap"]["rows"][row["name"]]
    assert interval["auc_2.5%"] <= row["auc"] <= interval["auc_97.5%"]
  assert 0.0 <= result["bootstrap"]["paper_ordering"]["2"]["fraction"] <= 1.0
  assert "the paper's order BERT < BERT+IMG < FashionBERT" in result["table"]
  with open(os.path.join(str(tmp_path), "table4.json"), encoding="utf-8") as handle:
    written = json.load(handle)
  assert written["rows"][0]["name"] == "2L-BERT" and written["bootstrap"]["resamples"] == 50


def _pairwise_auc(labels, scores):
  """Brute-force Mann-Whitney: P(positive > negative) + 0.5 P(tie), over every pair."""
  positives = [s for s, l in zip(scores, labels) if l == 1]
  negatives = [s for s, l in zip(scores, labels) if l == 0]
  wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
  return wins / (len(positives) * len(negatives))


def test_auc_matches_pairwise_reference_on_tied_scores():
  rng = np.random.default_rng(0)
  for trial in range(5):
    labels = rng.integers(0, 2, size=200)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 6 + trial, size=200) / 7.0   # few distinct values: many ties
    assert metrics.roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores),
                                                            abs=1e-12)
  assert metrics.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
  assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
  with pytest.raises(ValueError, match="both classes"):
    metrics.roc_auc([1, 1], [0.1, 0.2])
