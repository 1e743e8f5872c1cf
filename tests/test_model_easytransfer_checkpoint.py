"""The authors' released FashionBERT (EasyTransfer TF1 checkpoint) imported as a run directory.

Each test writes a TF1 checkpoint itself (a TF1 Saver in a graph: their exact variable names and
shapes, small H, random values, with / without their model scope, Adam slots and global_step) and
compares the imported model with their forward pass written in NumPy (`easytransfer_reference`).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import easytransfer_reference as ref
from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.cli import import_checkpoint as import_checkpoint_cli
from fashionbert_tf.data import contract
from fashionbert_tf.evaluation import pretraining_run
from fashionbert_tf.serving import export
from fashionbert_tf.modeling.checkpoints import easytransfer
from fashionbert_tf.training import import_checkpoint
from fashionbert_tf.modeling import fused_inference
from fashionbert_tf.modeling import inference_precision
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.modeling.checkpoints.canonical_table import CheckpointMismatchError

HIDDEN, HEADS, LAYERS, VOCAB, FEATURE_DIM = 16, 2, 2, 40, 24
STEP = 54198


def _inputs(seed=1, batch=3, text_length=9):
  """Their eval inputs: ids with [CLS]=2 ... [SEP]=3, row 1 padded, segment 0, image mask 1."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, VOCAB, size=[batch, text_length]).astype(np.int32)
  mask = np.ones([batch, text_length], np.int32)
  ids[:, 0] = 2
  ids[:, -1] = 3
  mask[1, 5:] = 0
  ids[1, 5:] = 0
  ids[1, 4] = 3
  features = np.abs(rng.standard_normal([batch, contract.NUM_PATCHES, FEATURE_DIM])).astype(
      np.float32)
  return dict(input_ids=ids, input_mask=mask, segment_ids=np.zeros_like(ids),
              image_feature=features,
              image_mask=np.ones([batch, contract.NUM_PATCHES], np.int32))


def _import(tmp_path, weights, **write_kwargs):
  """Writes their checkpoint and imports it with a vocabulary of VOCAB WordPieces."""
  prefix = ref.write_tf1_checkpoint(str(tmp_path / "released" / "model.ckpt"), weights,
                                    **write_kwargs)
  vocab_file = tmp_path / "vocab.txt"
  vocab_file.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                                   [f"word{i}" for i in range(VOCAB - 5)]) + "\n")
  result = import_checkpoint.import_checkpoint(prefix, str(tmp_path / "run"),
                                          num_attention_heads=HEADS,
                                          overrides=[f"data.vocab_file={vocab_file}"])
  return prefix, result


@pytest.fixture(scope="module")
def weights():
  return ref.their_weights(hidden=HIDDEN, layers=LAYERS, vocab=VOCAB, feature_dim=FEATURE_DIM)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, weights):
  """Their checkpoint with the model scope, Adam slots and global_step, imported once."""
  tmp_path = tmp_path_factory.mktemp("easytransfer")
  prefix, result = _import(tmp_path, weights, global_step=STEP)
  config = experiment_config.load_config(os.path.join(result["output_dir"], "params.yaml"))
  model, path, _ = pretraining_run.restore_model(config)
  return dict(prefix=prefix, result=result, config=config, model=model, path=path,
              tmp_path=tmp_path)


def test_run_directory_is_like_pretrains(imported):
  run = imported["result"]["output_dir"]
  assert sorted(f for f in os.listdir(run) if not f.startswith("ckpt-")) == [
      "checkpoint", "imported_from.json", "params.yaml"]
  assert tf.train.latest_checkpoint(run) == os.path.join(run, f"ckpt-{STEP}")
  assert imported["path"] == os.path.join(run, f"ckpt-{STEP}")
  model_config = imported["config"].model
  assert (model_config.patch_embedding, model_config.mpm_head) == ("easytransfer", "linear")
  assert (model_config.num_layers, model_config.hidden_size, model_config.num_attention_heads,
          model_config.vocab_size, model_config.feature_dim) == (
              LAYERS, HIDDEN, HEADS, VOCAB, FEATURE_DIM)
  assert model_config.use_precomputed_features
  assert model_config.patch_feature_normalization == "none"
  with open(os.path.join(run, "imported_from.json")) as f:
    provenance = json.load(f)
  assert provenance["global_step"] == STEP
  assert provenance["scopes_stripped"] == ["image_bert_pre_trained_model"]
  # Their 20 global + 16 per layer variables; Adam's two slots each + beta1/2_power + global_step.
  assert provenance["variables"] == 20 + 16 * LAYERS
  assert provenance["training_state_left_alone"] == 2 * (20 + 16 * LAYERS) + 3
  # What pretrain checkpoints, with a fresh optimizer: step 0 (a warm start), no Adam moments.
  reader = tf.train.load_checkpoint(imported["path"])
  assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 0
  assert not [n for n in reader.get_variable_to_shape_map() if "OPTIMIZER_SLOT" in n]
  assert any(n.startswith("early_stopping/") for n in reader.get_variable_to_shape_map())


def test_match_probability_equals_their_forward_pass(imported, weights):
  inputs = _inputs()
  expected_logits, _ = ref.their_forward(weights, num_heads=HEADS, **inputs)
  outputs = imported["model"]({
      "input_word_ids": inputs["input_ids"], "input_mask": inputs["input_mask"],
      "input_type_ids": inputs["segment_ids"], "patch_features": inputs["image_feature"]},
                              training=False)
  logits = outputs["tia_logits"].numpy()
  np.testing.assert_allclose(logits, expected_logits, atol=2e-5, rtol=0)
  probability = tf.nn.softmax(logits)[:, 1].numpy()
  np.testing.assert_allclose(probability, ref.softmax_match(expected_logits), atol=1e-5, rtol=0)
  # The check can fail: the probabilities differ between pairs (not a constant).
  assert np.ptp(ref.softmax_match(expected_logits)) > 0.05


def test_mlm_and_mpm_heads_equal_theirs(imported, weights):
  inputs = _inputs(seed=2, batch=2, text_length=7)
  _, sequence = ref.their_forward(weights, num_heads=HEADS, **inputs)
  lm_positions = np.array([[1, 3], [2, 5]], np.int32)
  patch_positions = np.array([[0, 63, 7], [12, 5, 40]], np.int32)
  outputs = imported["model"]({
      "input_word_ids": inputs["input_ids"], "input_mask": inputs["input_mask"],
      "input_type_ids": inputs["segment_ids"], "patch_features": inputs["image_feature"],
      "masked_lm_positions": lm_positions,
      "masked_patch_positions": patch_positions,
      "masked_patch_weights": np.zeros([2, 3], np.float32)}, training=False)
  np.testing.assert_allclose(outputs["sequence_output"].numpy(), sequence, atol=2e-5, rtol=0)
  np.testing.assert_allclose(outputs["mlm_logits"].numpy(),
                             ref.their_mlm_logits(weights, sequence, lm_positions),
                             atol=5e-5, rtol=0)
  np.testing.assert_allclose(outputs["mpm_logits"].numpy(),
                             ref.their_mpm_logits(weights, sequence, 7, patch_positions),
                             atol=5e-5, rtol=0)


def test_bare_names_without_training_state_read_the_same(tmp_path, imported, weights):
  bare = ref.write_tf1_checkpoint(str(tmp_path / "bare"), weights, scope="", adam_slots=False)
  read = easytransfer.read_checkpoint(bare)
  scoped = easytransfer.read_checkpoint(imported["prefix"])
  assert read.prefixes == set() and scoped.prefixes == {"image_bert_pre_trained_model"}
  assert read.global_step == 0 and scoped.global_step == STEP
  assert read.skipped == []
  assert sorted(read.weights) == sorted(scoped.weights) == sorted(weights)
  for name, value in weights.items():
    np.testing.assert_array_equal(read.weights[name], value)
    np.testing.assert_array_equal(scoped.weights[name], value)
  # A folder resolves to its latest checkpoint.
  assert easytransfer.resolve_prefix(os.path.dirname(imported["prefix"])) == imported["prefix"]


def test_mismatch_lists_missing_unexpected_and_misshaped_and_writes_nothing(tmp_path, weights):
  broken = dict(weights)
  del broken["bert/image_embeddings/ImageEmbLayerNorm/beta"]
  broken["cls/img_predictions/output_weights"] = np.zeros([HIDDEN, FEATURE_DIM + 1], np.float32)
  broken["bert/encoder/layer_0/attention/self/query/kernel"] = np.zeros([HIDDEN, HIDDEN + 2],
                                                                        np.float32)
  broken["cls/extra/output_weights"] = np.zeros([3], np.float32)
  prefix = ref.write_tf1_checkpoint(str(tmp_path / "broken" / "model.ckpt"), broken,
                                    global_step=7)
  output = tmp_path / "runs" / "authors"
  with pytest.raises(CheckpointMismatchError) as error:
    import_checkpoint.import_checkpoint(prefix, str(output), num_attention_heads=HEADS)
  message = str(error.value)
  assert "\n" not in message
  assert "1 missing [bert/image_embeddings/ImageEmbLayerNorm/beta]" in message
  assert "1 unexpected [cls/extra/output_weights]" in message
  assert "2 mis-shaped [" in message
  assert f"cls/img_predictions/output_weights [{HIDDEN}, {FEATURE_DIM + 1}]" in message
  assert "bert/encoder/layer_0/attention/self/query/kernel" in message
  assert not output.exists()
  assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")


def test_a_text_bert_checkpoint_is_refused_with_the_image_variables_missing(tmp_path, weights):
  text_only = {n: v for n, v in weights.items()
               if not n.startswith(("bert/image_embeddings/", "cls/img_predictions/"))}
  prefix = ref.write_tf1_checkpoint(str(tmp_path / "bert" / "bert_model.ckpt"), text_only,
                                    scope="")
  with pytest.raises(CheckpointMismatchError, match=r"6 missing \[bert/image_embeddings/"):
    import_checkpoint.import_checkpoint(prefix, str(tmp_path / "run"), num_attention_heads=HEADS)


def test_output_that_exists_is_refused(tmp_path, weights, imported):
  with pytest.raises(FileExistsError, match="not empty"):
    import_checkpoint.import_checkpoint(imported["prefix"], imported["result"]["output_dir"],
                                   num_attention_heads=HEADS)


def test_heads_default_to_bert_head_size(tmp_path):
  wide = ref.their_weights(hidden=128, layers=1, vocab=VOCAB, feature_dim=FEATURE_DIM,
                           intermediate=64)
  prefix = ref.write_tf1_checkpoint(str(tmp_path / "wide"), wide, scope="", adam_slots=False)
  keys, missing, unexpected = easytransfer.describe_checkpoint(easytransfer.read_checkpoint(prefix))
  assert keys["num_attention_heads"] == 2 and keys["num_layers"] == 1
  assert missing == [] and unexpected == []


def test_cli_imports_and_reports_a_mismatch_in_one_line(tmp_path, weights, run_cli):
  prefix = ref.write_tf1_checkpoint(str(tmp_path / "ok" / "model.ckpt"), weights, global_step=3)
  run_cli(import_checkpoint_cli, [
      "import-checkpoint", "--format=easytransfer", f"--checkpoint={prefix}",
      f"--output={tmp_path / 'run'}", f"--num_attention_heads={HEADS}"])
  assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-3")

  broken = {n: v for n, v in weights.items() if n != "cls/seq_relationship/output_bias"}
  bad = ref.write_tf1_checkpoint(str(tmp_path / "bad" / "model.ckpt"), broken)
  completed = subprocess.run(
      [sys.executable, "-m", "fashionbert_tf.cli.main", "import-checkpoint",
       f"--checkpoint={bad}", f"--output={tmp_path / 'bad_run'}",
       f"--num_attention_heads={HEADS}"],
      capture_output=True, text=True, check=False, timeout=300)
  assert completed.returncode == 1, completed.stderr
  lines = [l for l in completed.stderr.splitlines() if "CheckpointMismatchError" in l]
  assert len(lines) == 1 and "1 missing [cls/seq_relationship/output_bias]" in lines[0]
  assert "Traceback" not in completed.stderr
  assert not (tmp_path / "bad_run").exists()


def test_export_scores_like_their_forward_pass(imported, weights):
  path = export.export_saved_model(imported["config"], str(imported["tmp_path"] / "exports"),
                                   version=1)
  loaded = tf.saved_model.load(path)
  inputs = _inputs(seed=4)
  served = loaded.signatures["score_features"](
      input_word_ids=tf.constant(inputs["input_ids"]),
      input_mask=tf.constant(inputs["input_mask"]),
      input_type_ids=tf.constant(inputs["segment_ids"]),
      patch_features=tf.constant(inputs["image_feature"]))["match_probability"].numpy()
  expected, _ = ref.their_forward(weights, num_heads=HEADS, **inputs)
  np.testing.assert_allclose(served, ref.softmax_match(expected), atol=1e-5, rtol=0)


def _layout_config(**model):
  keys = dict(encoder_format="none", num_layers=1, hidden_size=16, num_attention_heads=2,
              intermediate_size=32, vocab_size=VOCAB, backbone="linear", feature_dim=FEATURE_DIM,
              use_precomputed_features=True, patch_feature_normalization="none",
              patch_embedding="easytransfer", mpm_head="linear", dropout_rate=0.3)
  keys.update(model)
  return experiment_config.load_config(None, [{"model": keys}]).model


def test_easytransfer_layout_patches_do_not_depend_on_the_text_and_dropout_trains_only():
  model = model_builder.build_fashionbert(_layout_config())
  rng = np.random.default_rng(0)
  features = rng.standard_normal([2, contract.NUM_PATCHES, FEATURE_DIM]).astype(np.float32)
  embedded = []
  for length in (3, 7):
    ids = np.full([2, length], 6, np.int32)
    embedded.append(model.encoder.input_embeddings(dict(
        input_word_ids=ids, input_mask=np.ones_like(ids), input_type_ids=np.zeros_like(ids),
        dense_inputs=model.patch_embedding(features, training=False)))[:, length:].numpy())
  np.testing.assert_allclose(embedded[0], embedded[1], atol=1e-6)
  # Their ImageEmbLayerNorm output: zero mean, unit variance per patch before gamma / beta, so
  # with fresh gamma = 1, beta = 0 each patch row is normalized (and not normalized again).
  np.testing.assert_allclose(embedded[0].mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(embedded[0].std(-1), 1.0, atol=1e-3)
  batch = {"input_word_ids": np.full([2, 4], 6, np.int32), "input_mask": np.ones([2, 4], np.int32),
           "input_type_ids": np.zeros([2, 4], np.int32), "patch_features": features}
  inference = [model(batch, training=False)["tia_logits"].numpy() for _ in range(2)]
  np.testing.assert_array_equal(inference[0], inference[1])
  trained = model(batch, training=True)["tia_logits"].numpy()
  assert np.abs(trained - inference[0]).max() > 1e-4


def test_fused_bfloat16_inference_scores_the_easytransfer_layout():
  # Seeded: some initializations saturate P(match) for every pair, which the spread check below
  # would reject (with this seed the four pairs' P(match) spread over ~0.6).
  tf_keras.utils.set_random_seed(3)
  model = model_builder.build_fashionbert(_layout_config())
  rng = np.random.default_rng(3)
  for variable in model.patch_embedding.trainable_variables:   # away from the 0.02 init
    variable.assign(rng.normal(0.0, 0.5, size=variable.shape).astype(np.float32))
  for dense in (model.encoder.pooler_layer, model.tia_head.classifier):
    dense.kernel.assign(rng.normal(0.0, 1.0, size=dense.kernel.shape).astype(np.float32))
  batch = {"input_word_ids": rng.integers(5, 30, size=[4, 6]).astype(np.int32),
           "input_mask": np.ones([4, 6], np.int32), "input_type_ids": np.zeros([4, 6], np.int32),
           "patch_features": rng.normal(size=[4, 64, model.patch_embedding.feature_dim]).astype(
               np.float32)}
  exact = tf.nn.softmax(model(batch, training=False)["tia_logits"])[:, 1].numpy()
  assert np.ptp(exact) > 0.05   # the pairs differ: parity is not vacuous
  for precision, tolerance in (("float32", 2e-5), ("bfloat16", 0.02)):
    fused = fused_inference.FusedScoringModel(model, precision)
    np.testing.assert_allclose(tf.nn.softmax(fused(batch)["tia_logits"])[:, 1].numpy(), exact,
                               atol=tolerance, err_msg=precision)


def test_unknown_layout_names_the_field():
  with pytest.raises(ValueError, match="model.patch_embedding = 'resnet'"):
    model_builder.build_fashionbert(_layout_config(patch_embedding="resnet"))
  with pytest.raises(ValueError, match="model.mpm_head = 'mlp'"):
    model_builder.build_fashionbert(_layout_config(mpm_head="mlp"))


def test_search_finetuning_starts_from_an_imported_run(toy_data_config, tmp_path):
  """`fashionbert finetune` takes an imported run as its pretraining checkpoint: the encoder,
  their patch embedding (all its own tables) and the TIA head become the search model's."""
  from fashionbert_tf.data import tokenization  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.data.toy import search_log_generator  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.search import finetune  # pylint: disable=g-import-not-at-top
  from fashionbert_tf.search import search_model_builder as search_builder  # pylint: disable=g-import-not-at-top
  vocab_size = len(tokenization.read_vocab(toy_data_config.vocab_file))
  weights = ref.their_weights(hidden=HIDDEN, layers=LAYERS, vocab=vocab_size,
                              feature_dim=FEATURE_DIM)
  prefix = ref.write_tf1_checkpoint(str(tmp_path / "released" / "model.ckpt"), weights,
                                    global_step=11)
  run = import_checkpoint.import_checkpoint(prefix, str(tmp_path / "run"), num_attention_heads=HEADS,
                                       overrides=[f"data.vocab_file={toy_data_config.vocab_file}"])
  products = search_log_generator.toy_catalogue_products(24, 12, 3, "both", num_empty_descriptions=1)
  search_log_generator.write_toy_search_logs(
      str(tmp_path / "logs"), products,
      search_log_generator.ToySearchLogSettings(num_sessions=40, impressions_per_query=6, seed=1))
  config = experiment_config.load_config(None, [
      f"search.pretrained_checkpoint={run['output_dir']},search.logs_dir={tmp_path / 'logs'},"
      f"search.runs_dir={tmp_path / 'runs'},model.search_variant=fashionbert,"
      "search.latency_examples=2,search.latency_warmup=1,train.train_steps=2,"
      "train.global_batch_size=8,train.warmup_steps=1,train.checkpoint_every_steps=100,"
      "train.validation_every_steps=100,train.log_every_steps=1"])
  config.data = toy_data_config
  model, model_config = search_builder.build_search_model(config)
  assert model_config.patch_embedding == "easytransfer"
  np.testing.assert_array_equal(model.patch_embedding.image_projector.numpy(),
                                weights["bert/image_embeddings/image_projector"])
  np.testing.assert_array_equal(model.patch_embedding.layer_norm.gamma.numpy(),
                                weights["bert/image_embeddings/ImageEmbLayerNorm/gamma"])
  np.testing.assert_array_equal(model.click_head.kernel.numpy(),
                                weights["cls/seq_relationship/output_weights"].T)
  summary = finetune.run_finetuning(config)
  assert summary["final_step"] == 2 and np.isfinite(summary["train_logs"]["loss"])
