"""SavedModel export for TF Serving: layout, fresh-process round trip, ops, bad requests, VSL.

One tiny FashionBERT (2 layers, hidden 32, linear backbone, D=12, a vocabulary written here) is
exported once per module; every test reads that export.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # pylint: disable=unused-import  (registers the tokenizer ops)

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import contract
from fashionbert_tf.data import tokenization
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.modeling import model_builder
from fashionbert_tf.serving import export
from fashionbert_tf.serving import op_allowlist
from fashionbert_tf.serving import warmup

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "black", "white",
         "cotton", "wool", "dress", "shirt", "coat", "long", "short", "sleeve", "##s", "with",
         "collar", "button", "closure", "striped", "navy", "in", "at", "front", ".", ","]
FEATURE_DIM = 12
TEXTS = ["Red cotton dress with long sleeves.",
         "navy striped shirt , button closure at front",
         "a white wool coat with collar and unknownword"]


def tiny_config(tmp_dir, num_layers=2):
  vocab_file = os.path.join(tmp_dir, "vocab.txt")
  with open(vocab_file, "w", encoding="utf-8") as f:
    f.write("\n".join(VOCAB) + "\n")
  return experiment_config.load_config(None, [
      f"model.encoder_format=none,model.num_layers={num_layers},model.hidden_size=32,"
      "model.num_attention_heads=2,model.intermediate_size=64,model.backbone=linear,"
      f"model.feature_dim={FEATURE_DIM},model.vocab_size={len(VOCAB)},model.dropout_rate=0.1,"
      f"data.vocab_file={vocab_file}"])


def make_images(count, seed=0, size=contract.IMAGE_SIZE):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, size=[count, size, size, 3], dtype=np.uint8)


def png_bytes(images):
  return [tf.io.encode_png(image).numpy() for image in images]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  tmp_dir = str(tmp_path_factory.mktemp("serving"))
  config = tiny_config(tmp_dir)
  model = model_builder.build_fashionbert(config.model)
  path = export.export_saved_model(config, os.path.join(tmp_dir, "exports"), model=model,
                                   version=3)
  return {"config": config, "model": model, "path": path, "tmp_dir": tmp_dir,
          "loaded": tf.saved_model.load(path)}


def keras_probability(model, config, texts, images):
  """P(match) straight from the Keras model, tokenized by the data side's tokenizer."""
  tokenizer = tokenization.build_tokenizer(config.data)
  ids, mask, types = tokenization.text_to_model_inputs(tokenizer, tf.constant(texts))
  features = model.compute_patch_features(tf.constant(images))
  return scoring.model_match_probability(model, ids, mask, types, features).numpy()


def test_tf_serving_layout_and_signatures(exported):
  path = exported["path"]
  assert os.path.basename(path) == "3"
  assert sorted(os.listdir(os.path.dirname(path))) == ["3"]  # no temporary folder left behind
  for name in ("saved_model.pb", "variables/variables.index", "assets/vocab.txt",
               warmup.WARMUP_FILE):
    assert os.path.exists(os.path.join(path, name)), name
  signatures = exported["loaded"].signatures
  assert sorted(signatures) == ["score_features", "serving_default"]
  inputs = signatures["serving_default"].structured_input_signature[1]
  assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()} == {
      "text": (tf.string, [None]), "image": (tf.string, [None])}
  inputs = signatures["score_features"].structured_input_signature[1]
  assert inputs["patch_features"].shape.as_list() == [None, 64, FEATURE_DIM]
  assert all(inputs[key].dtype == tf.int32 for key in contract.TEXT_KEYS)
  outputs = signatures["serving_default"].structured_outputs
  assert list(outputs) == ["match_probability"] and outputs["match_probability"].dtype == tf.float32


def test_warmup_requests_are_prediction_logs_the_model_answers(exported):
  path = os.path.join(exported["path"], warmup.WARMUP_FILE)
  # Wire format: each record is a PredictionLog whose first field is predict_log (field 6,
  # length-delimited -> tag byte 0x32).
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    assert record[0] == 0x32
  requests = warmup.read_warmup_requests(path)
  assert [name for name, _ in requests] == ["serving_default", "score_features"]
  for signature_name, inputs in requests:
    outputs = exported["loaded"].signatures[signature_name](
        **{name: tf.constant(value) for name, value in inputs.items()})
    probability = outputs["match_probability"].numpy()
    assert probability.shape == (1,) and 0.0 <= probability[0] <= 1.0


def test_exported_graph_uses_only_tf_serving_ops(exported):
  op_types = op_allowlist.saved_model_op_types(exported["path"])
  # The tokenizer really is inside the graph, with the classic (servable) ops.
  assert {"WordpieceTokenizeWithOffsets", "RegexSplitWithOffsets", "DecodeImage"} <= set(op_types)
  assert op_allowlist.disallowed_ops(exported["path"]) == {}


def test_fresh_process_gives_the_keras_probabilities(exported,
                                                       signatures_in_fresh_process):
  images = make_images(len(TEXTS), seed=1)
  encoded = png_bytes(images)
  request_file = os.path.join(exported["tmp_dir"], "request.npz")
  tokenizer = tokenization.build_tokenizer(exported["config"].data)
  ids, mask, types = tokenization.text_to_model_inputs(tokenizer, tf.constant(TEXTS))
  features = exported["model"].compute_patch_features(tf.constant(images)).numpy()
  np.savez(request_file, text=np.array(TEXTS, dtype=object), image=np.array(encoded, dtype=object),
           input_word_ids=ids.numpy(), input_mask=mask.numpy(), input_type_ids=types.numpy(),
           patch_features=features)
  answer = signatures_in_fresh_process(exported["path"], request_file, ("text", "image"),
                                       "match_probability")
  assert answer["modules"] == []
  expected = keras_probability(exported["model"], exported["config"], TEXTS, images)
  assert np.all((expected > 0) & (expected < 1))
  np.testing.assert_allclose(answer["serving_default"], expected, atol=1e-5, rtol=0)
  np.testing.assert_allclose(answer["score_features"], expected, atol=1e-5, rtol=0)


def test_vocabulary_is_an_asset_not_a_graph_constant(exported):
  """The tokenizer's table is initialized from assets/vocab.txt when the SavedModel loads."""
  with open(os.path.join(exported["path"], "assets", "vocab.txt"), encoding="utf-8") as f:
    assert f.read().split() == VOCAB
  with open(os.path.join(exported["path"], "saved_model.pb"), "rb") as f:
    graph = f.read()
  # An embedded vocabulary would be a string constant: consecutive TensorProto string_val entries
  # (field 8, tag 0x42, then the length) "cotton", "wool".
  assert b"\x42\x06cotton\x42\x04wool" not in graph
  module = export.build_serving_module(exported["model"], exported["config"].data)
  texts = tf.constant(TEXTS + ["Ünïcödé  RED\tdress!!", "x" * 300])
  expected = tokenization.text_to_model_inputs(
      tokenization.build_tokenizer(exported["config"].data), texts)
  got = tokenization.text_to_model_inputs(module.tokenizer, texts)
  for a, b in zip(expected, got):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_other_image_sizes_and_formats_are_decoded_and_resized(exported):
  serve = exported["loaded"].signatures["serving_default"]
  gray = tf.io.encode_jpeg(make_images(1, seed=2, size=96)[0, :, :80, :1]).numpy()
  color = tf.io.encode_png(make_images(1, seed=3, size=300)[0]).numpy()
  probability = serve(text=tf.constant(TEXTS[:2]), image=tf.constant([gray, color]))
  probability = probability["match_probability"].numpy()
  assert probability.shape == (2,) and np.all(np.isfinite(probability))


@pytest.mark.parametrize("texts, images, message", [
    (["", TEXTS[0]], None, "empty or whitespace-only text"),
    ([" \t "], None, "empty or whitespace-only text"),
    ([TEXTS[0]], [b"this is not an image"], "image"),
    ([TEXTS[0]], [b""], "empty image bytes"),
    ([TEXTS[0], TEXTS[1]], "one", "same batch size"),
])
def test_bad_serving_requests_fail_with_a_clear_error(exported, texts, images, message):
  serve = exported["loaded"].signatures["serving_default"]
  if images is None:
    images = png_bytes(make_images(len(texts)))
  elif images == "one":
    images = png_bytes(make_images(1))
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    serve(text=tf.constant(texts), image=tf.constant(images))


def test_wrong_dtypes_are_refused(exported):
  signatures = exported["loaded"].signatures
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    signatures["serving_default"](text=tf.constant([1, 2]), image=tf.constant([b"x", b"y"]))
  ids = tf.constant([[2, 6, 12, 3]], tf.int32)
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    signatures["score_features"](
        input_word_ids=tf.cast(ids, tf.float32), input_mask=tf.ones_like(ids),
        input_type_ids=tf.zeros_like(ids),
        patch_features=tf.zeros([1, 64, FEATURE_DIM]))


@pytest.mark.parametrize("change, message", [
    ("nan_features", "NaN or Inf"),
    ("id_out_of_vocab", "outside the vocabulary"),
    ("no_real_token", "no real token"),
    ("mask_shape", "input_mask must have the shape"),
])
def test_bad_feature_requests_fail_instead_of_returning_nan(exported, change, message):
  ids = np.array([[2, 6, 12, 3]], np.int32)
  inputs = {"input_word_ids": ids, "input_mask": np.ones_like(ids),
            "input_type_ids": np.zeros_like(ids),
            "patch_features": np.zeros([1, 64, FEATURE_DIM], np.float32)}
  if change == "nan_features":
    inputs["patch_features"][0, 5, 3] = np.nan
  elif change == "id_out_of_vocab":
    inputs["input_word_ids"] = np.array([[2, len(VOCAB) + 5, 12, 3]], np.int32)
  elif change == "no_real_token":
    inputs["input_mask"] = np.zeros_like(ids)
  elif change == "mask_shape":
    inputs["input_mask"] = np.ones([1, 3], np.int32)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    exported["loaded"].signatures["score_features"](
        **{name: tf.constant(value) for name, value in inputs.items()})


def test_vsl_and_padding_to_512_give_the_same_probability(exported):
  """Paper 3.4 (VSL): [CLS] text [SEP] + 64 patches unpadded == text padded to 448 (512 total)."""
  model, config = exported["model"], exported["config"]
  tokenizer = tokenization.build_tokenizer(config.data)
  ids, mask, types = tokenization.text_to_model_inputs(tokenizer, tf.constant(TEXTS))
  assert ids.shape[1] < 20
  features = model.compute_patch_features(tf.constant(make_images(len(TEXTS), seed=4)))
  vsl = scoring.model_match_probability(model, ids, mask, types, features).numpy()
  padded_inputs = scoring.pad_text_inputs(ids, mask, types, contract.MAX_TEXT_LENGTH)
  assert padded_inputs[0].shape[1] + contract.NUM_PATCHES == contract.MAX_SEQUENCE_LENGTH
  padded = scoring.model_match_probability(model, *padded_inputs, features).numpy()
  np.testing.assert_allclose(vsl, padded, atol=1e-5, rtol=0)
  # The same through the exported signature, one pair at a time (batch 1, as served online).
  score = exported["loaded"].signatures["score_features"]
  for i in range(len(TEXTS)):
    row = [t[i:i + 1, :int(mask[i].numpy().sum())] for t in (ids, mask, types)]
    one_vsl = score(input_word_ids=row[0], input_mask=row[1], input_type_ids=row[2],
                    patch_features=features[i:i + 1])["match_probability"].numpy()
    padded_row = scoring.pad_text_inputs(*row)
    one_padded = score(input_word_ids=padded_row[0], input_mask=padded_row[1],
                       input_type_ids=padded_row[2],
                       patch_features=features[i:i + 1])["match_probability"].numpy()
    np.testing.assert_allclose(one_vsl, vsl[i:i + 1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(one_padded, vsl[i:i + 1], atol=1e-5, rtol=0)
