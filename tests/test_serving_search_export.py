"""Export of a fine-tuned search model (paper 3.4) for TF Serving: layout, fresh-process round
trip with the Keras model's P(click), warm-up, op allowlist, bad requests, the text-only variant.

One tiny fashionbert search model (2 layers, hidden 32, linear backbone, D=12) is saved as a
fine-tuning run and exported once per module through `fashionbert export --search_run` (restore
included); the oribert variant's serving functions are checked in memory.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # pylint: disable=unused-import  (registers the tokenizer ops)

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import contract
from fashionbert_tf.search import click_model as search_model_lib
from fashionbert_tf.search import click_scoring as scoring
from fashionbert_tf.search import layout
from fashionbert_tf.search import search_model_builder as model_builder
from fashionbert_tf.serving import export
from fashionbert_tf.serving import op_allowlist
from fashionbert_tf.serving import search_export
from fashionbert_tf.serving import warmup
from fashionbert_tf.training import trainer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "black", "white",
         "navy", "striped", "pinstripe", "shirt", "dress", "coat", "long", "short", "sleeve",
         "with", "pocket", "studio", "numpy", "casa", "seed", "check", "hoodie", "##s"]
FEATURE_DIM = 12
QUERIES = ["red striped shirt", "long sleeve navy hoodie", "dress with pocket"]
TITLES = ["Studio Numpy Red Striped Shirt", "Casa Seed Navy Hoodie", "Casa Seed White Dress"]


def tiny_search_config(tmp_dir, variant):
  vocab_file = os.path.join(tmp_dir, "vocab.txt")
  with open(vocab_file, "w", encoding="utf-8") as f:
    f.write("\n".join(VOCAB) + "\n")
  return experiment_config.load_config(None, [
      "model.encoder_format=none,model.num_layers=2,model.hidden_size=32,"
      "model.num_attention_heads=2,model.intermediate_size=64,model.backbone=linear,"
      f"model.feature_dim={FEATURE_DIM},model.vocab_size={len(VOCAB)},"
      f"model.initializer_range=0.2,model.search_variant={variant},data.vocab_file={vocab_file},"
      "search.max_query_length=8,search.max_title_length=8"])


def make_images(count, seed=0, size=contract.IMAGE_SIZE):
  return np.random.default_rng(seed).integers(0, 256, size=[count, size, size, 3], dtype=np.uint8)


def png_bytes(images):
  return [tf.io.encode_png(image).numpy() for image in images]


def keras_click_probability(model, config, queries, titles, images=None):
  """P(click) straight from the Keras model, with the layout the fine-tuning uses."""
  inputs = scoring.query_title_encoder(config, model.variant).encode(queries, titles)
  if images is not None:
    inputs[contract.FEATURES_KEY] = model.patch_feature_extractor(tf.constant(images),
                                                                  training=False)
  return search_model_lib.click_probability(model(inputs, training=False)).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, run_cli):
  """A fine-tuning run folder (checkpoint + params.yaml, as `fashionbert finetune` leaves it)
  exported with `fashionbert export --search_run`."""
  from fashionbert_tf.cli import export as export_cli  # pylint: disable=g-import-not-at-top
  tmp_dir = str(tmp_path_factory.mktemp("search_serving"))
  config = tiny_search_config(tmp_dir, "fashionbert")
  model, _ = model_builder.build_search_architecture(config.model, config.search)
  run_dir = os.path.join(tmp_dir, "run")
  trainer.save_params(config, run_dir)
  tf.train.Checkpoint(model=model).save(os.path.join(run_dir, "ckpt"))
  export_dir = os.path.join(tmp_dir, "exports")
  run_cli(export_cli, ["fashionbert export", f"--search_run={run_dir}",
                       f"--export_dir={export_dir}", "--version=2"])
  path = os.path.join(export_dir, "2")
  return {"config": config, "model": model, "path": path, "tmp_dir": tmp_dir,
          "loaded": tf.saved_model.load(path)}


def test_layout_signatures_and_servable_ops(exported):
  path = exported["path"]
  assert os.path.basename(path) == "2"
  assert sorted(os.listdir(os.path.dirname(path))) == ["2"]
  for name in ("saved_model.pb", "variables/variables.index", "assets/vocab.txt",
               warmup.WARMUP_FILE, export.PARAMS_COPY):
    assert os.path.exists(os.path.join(path, name)), name
  signatures = exported["loaded"].signatures
  assert sorted(signatures) == ["score_features", "serving_default"]
  inputs = signatures["serving_default"].structured_input_signature[1]
  assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()} == {
      "query": (tf.string, [None]), "title": (tf.string, [None]), "image": (tf.string, [None])}
  inputs = signatures["score_features"].structured_input_signature[1]
  assert inputs["patch_features"].shape.as_list() == [None, 64, FEATURE_DIM]
  assert list(signatures["serving_default"].structured_outputs) == ["click_probability"]
  op_types = op_allowlist.saved_model_op_types(path)
  assert {"WordpieceTokenizeWithOffsets", "DecodeImage"} <= set(op_types)
  assert op_allowlist.disallowed_ops(path) == {}


def test_warmup_requests_are_answered(exported):
  requests = warmup.read_warmup_requests(os.path.join(exported["path"], warmup.WARMUP_FILE))
  assert [name for name, _ in requests] == ["serving_default", "score_features"]
  assert sorted(requests[0][1]) == ["image", "query", "title"]
  for signature_name, inputs in requests:
    probability = exported["loaded"].signatures[signature_name](
        **{name: tf.constant(value) for name, value in inputs.items()})["click_probability"]
    assert probability.shape == (1,) and 0.0 < float(probability[0]) < 1.0


def test_fresh_process_gives_the_keras_click_probabilities(exported,
                                                             signatures_in_fresh_process):
  model, config = exported["model"], exported["config"]
  images = make_images(len(QUERIES), seed=1)
  encoder = scoring.query_title_encoder(config, "fashionbert")
  inputs = encoder.encode(QUERIES, TITLES)
  # The title really is segment T (2) and the query Q (0) in what the export is compared with.
  assert set(np.unique(inputs["input_type_ids"].numpy())) == {0, 2}
  features = model.patch_feature_extractor(tf.constant(images), training=False).numpy()
  request_file = os.path.join(exported["tmp_dir"], "request.npz")
  np.savez(request_file, query=np.array(QUERIES, dtype=object),
           title=np.array(TITLES, dtype=object), image=np.array(png_bytes(images), dtype=object),
           patch_features=features, **{key: inputs[key].numpy() for key in contract.TEXT_KEYS})
  answer = signatures_in_fresh_process(exported["path"], request_file,
                                       ("query", "title", "image"), "click_probability")
  assert answer["modules"] == []
  expected = keras_click_probability(model, config, QUERIES, TITLES, images)
  assert np.all((expected > 0) & (expected < 1)) and np.ptp(expected) > 1e-4
  np.testing.assert_allclose(answer["serving_default"], expected, atol=1e-5, rtol=0)
  np.testing.assert_allclose(answer["score_features"], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("change, message", [
    ("empty_query", "`query`: empty or whitespace-only"),
    ("blank_title", "`title`: empty or whitespace-only"),
    ("one_image", "same batch size"),
    ("bad_image", "image"),
])
def test_bad_raw_requests_fail_with_a_clear_error(exported, change, message):
  request = {"query": list(QUERIES[:2]), "title": list(TITLES[:2]),
             "image": png_bytes(make_images(2))}
  if change == "empty_query":
    request["query"][1] = ""
  elif change == "blank_title":
    request["title"][0] = " \t"
  elif change == "one_image":
    request["image"] = request["image"][:1]
  else:
    request["image"][0] = b"not an image"
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    exported["loaded"].signatures["serving_default"](
        **{key: tf.constant(value) for key, value in request.items()})


@pytest.mark.parametrize("change, message", [
    ("segment", r"input_type_ids values must be in \[0, 2\]"),
    ("nan", "NaN or Inf"),
    ("vocab", "outside the vocabulary"),
])
def test_bad_feature_requests_fail_instead_of_scoring(exported, change, message):
  ids = np.array([[2, 6, 11, 13, 3, 21, 13, 3]], np.int32)
  inputs = {"input_word_ids": ids, "input_mask": np.ones_like(ids),
            "input_type_ids": np.array([[0, 0, 0, 0, 0, 2, 2, 2]], np.int32),
            "patch_features": np.zeros([1, 64, FEATURE_DIM], np.float32)}
  if change == "segment":
    inputs["input_type_ids"][0, 6] = 1   # the image segment is never a text position's
  elif change == "nan":
    inputs["patch_features"][0, 3, 1] = np.nan
  else:
    inputs["input_word_ids"][0, 2] = len(VOCAB)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    exported["loaded"].signatures["score_features"](
        **{key: tf.constant(value) for key, value in inputs.items()})


def test_text_only_variant_has_no_image_inputs(tmp_path):
  """oribert's serving functions (not saved here: the save path is the fixture's) take no image."""
  config = tiny_search_config(str(tmp_path), "oribert")
  model, _ = model_builder.build_search_architecture(config.model, config.search)
  module = search_export.build_search_serving_module(model, config)
  signatures = module.signatures()
  def input_names(function):   # an unsaved tf.function's concrete function: positional specs
    return [spec.name for spec in function.get_concrete_function().structured_input_signature[0]
            if spec is not None]
  assert input_names(signatures["serving_default"]) == ["query", "title"]
  assert input_names(signatures["score_features"]) == list(contract.TEXT_KEYS)
  assert module.function_aliases() == {}
  assert [sorted(inputs) for _, inputs in search_export.warmup_requests(module)] == [
      ["query", "title"], sorted(contract.TEXT_KEYS)]
  served = signatures["serving_default"](query=tf.constant(QUERIES), title=tf.constant(TITLES))
  np.testing.assert_allclose(served["click_probability"].numpy(),
                             keras_click_probability(model, config, QUERIES, TITLES), atol=1e-5)
  assert layout.title_segment_id("oribert") == 1
