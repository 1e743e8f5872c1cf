"""`fashionbert_tf.Matcher` over a real tiny pretraining run and its exports: the evaluator's
scores, run = SavedModel, bfloat16 close, ranking = scores, one backbone pass per image, clear
errors, and the README's `## Python API` block run as written."""

import os
import re

import numpy as np
from PIL import Image
import pytest

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import image_loading
from fashionbert_tf.data import records
from fashionbert_tf.data import tokenization
from fashionbert_tf.evaluation import evaluate
from fashionbert_tf.evaluation import pair_scoring
from fashionbert_tf.modeling import fused_inference
from fashionbert_tf.serving import export
from fashionbert_tf.training import pretrain

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
# |P(match) bfloat16 - float32| allowed (fused graph, bfloat16 matmuls): measured <= 0.0021 here,
# with float32 scores spread over 0.047; inference_precision.py states 0.01 on the test models.
BFLOAT16_TOLERANCE = 0.01


def run_overrides(data_config, model_dir):
  with open(data_config.vocab_file, encoding="utf-8") as f:
    vocab_size = sum(1 for _ in f)
  return [{"data": data_config.as_dict(),
           "model": {"encoder_format": "none", "backbone": "linear", "num_layers": 2,
                     "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
                     "vocab_size": vocab_size, "feature_dim": 16, "max_position_embeddings": 128,
                     # A wide init: scores that differ between pairs by far more than 1e-5.
                     "initializer_range": 0.15},
           "train": {"model_dir": model_dir, "train_steps": 3, "global_batch_size": 8,
                     "warmup_steps": 1, "checkpoint_every_steps": 3, "validation_steps": 0,
                     "log_every_steps": 1, "loss_weighting": "fixed", "learning_rate": 1e-3},
           "eval": {"batch_size": 16, "images_per_step": 8}}]


@pytest.fixture(scope="module")
def run(toy_data_config, tmp_path_factory):
  """A 3-step `run_pretraining` on the tiny toy TFRecords in `<root>/runs/toy`, its validation
  images as PNG files, and float32 (version 1) and bfloat16 (version 2) exports in
  `<root>/exports/toy`."""
  root = str(tmp_path_factory.mktemp("matcher"))
  model_dir = os.path.join(root, "runs", "toy")
  config = experiment_config.load_config(None, run_overrides(toy_data_config, model_dir))
  pretrain.run_pretraining(config)
  file_pattern = records.split_file_pattern(toy_data_config.tfrecord_dir, "validation")
  images, paths = {}, {}
  for record in records.read_records(file_pattern):
    record_id = int(record["record_id"])
    images[record_id] = record["image"].numpy()
    paths[record_id] = os.path.join(root, f"image_{record_id}.png")
    Image.fromarray(images[record_id]).save(paths[record_id])
  export_dir = os.path.join(root, "exports", "toy")
  export.export_saved_model(config, export_dir, version=1)
  export.export_saved_model(config, export_dir, version=2, precision="bfloat16")
  return {"root": root, "model_dir": model_dir, "config": config, "file_pattern": file_pattern,
          "images": images, "paths": paths, "export_dir": export_dir}


@pytest.fixture(scope="module")
def matcher(run):
  from fashionbert_tf import Matcher  # pylint: disable=g-import-not-at-top
  return Matcher.load(run["model_dir"])


@pytest.fixture(scope="module")
def pairs(run):
  """Record-id pairs of the validation split: each record with itself and with two others."""
  ids = np.array(sorted(run["images"]), np.int64)
  text_ids = np.concatenate([ids, ids, ids])
  image_ids = np.concatenate([ids, np.roll(ids, 3), np.roll(ids, 7)])
  table = evaluate.read_record_table(run["file_pattern"])
  texts = [table.description_of(rid) for rid in text_ids]
  return {"text_ids": text_ids, "image_ids": image_ids, "table": table, "texts": texts}


def evaluator_scores(run, pairs, precision="float32"):
  """P(match) of the pairs by `fashionbert evaluate`'s own path: build_scorer + score_pairs."""
  config = experiment_config.load_config(os.path.join(run["model_dir"], "params.yaml"))
  config.override({"eval": {"mixed_precision": precision}})
  scorer, _, _ = evaluate.build_scorer(config)
  scores, _ = pair_scoring.score_pairs(
      scorer, pairs["table"], tokenization.build_tokenizer(config.data), pairs["text_ids"],
      pairs["image_ids"], run["file_pattern"], batch_size=16, images_per_step=8)
  return scores


def mixed_images(run, image_ids):
  """Every other image as a PNG path, the rest as uint8 arrays."""
  return [run["paths"][rid] if i % 2 else run["images"][rid] for i, rid in enumerate(image_ids)]


@pytest.fixture(scope="module")
def float32_scores(run, matcher, pairs):
  return matcher.score(pairs["texts"], mixed_images(run, pairs["image_ids"]))


def test_score_equals_the_evaluators_score(run, matcher, pairs, float32_scores):
  assert matcher.kind == "run" and matcher.precision == "float32"
  assert matcher.image_resize == "pad"   # data.image_resize's default, read from params.yaml
  expected = evaluator_scores(run, pairs)
  assert float32_scores.dtype == np.float32 and float32_scores.shape == expected.shape
  np.testing.assert_allclose(float32_scores, expected, atol=1e-5, rtol=0)
  assert np.ptp(float32_scores) > 0.01   # pairs told apart by 1,000x the tolerance
  single = matcher.score(pairs["texts"][5], run["paths"][int(pairs["image_ids"][5])])
  assert single.shape == (1,)
  np.testing.assert_allclose(single, float32_scores[5:6], atol=1e-5)


def test_saved_model_gives_the_runs_scores(run, pairs, float32_scores):
  from fashionbert_tf import Matcher  # pylint: disable=g-import-not-at-top
  version_1 = Matcher.load(os.path.join(run["export_dir"], "1"))
  assert version_1.kind == "saved_model" and version_1.precision == "float32"
  np.testing.assert_allclose(version_1.score(pairs["texts"], mixed_images(run, pairs["image_ids"])),
                             float32_scores, atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match="exported in float32"):
    Matcher.load(os.path.join(run["export_dir"], "1"), precision="bfloat16")
  latest = Matcher.load(run["export_dir"])   # the export folder: its highest version, bfloat16
  assert latest.path.endswith(os.path.join("toy", "2")) and latest.precision == "bfloat16"
  np.testing.assert_allclose(latest.score(pairs["texts"], mixed_images(run, pairs["image_ids"])),
                             float32_scores, atol=BFLOAT16_TOLERANCE, rtol=0)


def test_bfloat16_run_is_the_fused_graph_and_close(run, pairs, float32_scores):
  from fashionbert_tf import Matcher  # pylint: disable=g-import-not-at-top
  matcher = Matcher.load(run["model_dir"], precision="bfloat16")
  assert matcher.precision == "bfloat16"
  assert isinstance(matcher.scorer.model, fused_inference.FusedScoringModel)
  scores = matcher.score(pairs["texts"], mixed_images(run, pairs["image_ids"]))
  np.testing.assert_allclose(scores, float32_scores, atol=BFLOAT16_TOLERANCE, rtol=0)
  np.testing.assert_allclose(scores, evaluator_scores(run, pairs, "bfloat16"), atol=1e-3, rtol=0)


def test_rankings_follow_the_scores(run, matcher, pairs):
  ids = sorted(run["images"])
  text = pairs["table"].description_of(ids[0])
  images = [run["paths"][rid] for rid in ids]
  scores = matcher.score([text] * len(images), images)
  indices, ranked = matcher.rank_images(text, images)
  np.testing.assert_array_equal(indices, np.argsort(-scores, kind="stable"))
  np.testing.assert_allclose(ranked, scores[indices], atol=1e-6)
  assert np.all(np.diff(ranked) <= 0)
  top, top_scores = matcher.rank_images(text, images, top_k=3)
  np.testing.assert_array_equal(top, indices[:3])
  np.testing.assert_allclose(top_scores, ranked[:3], atol=1e-6)

  texts = [pairs["table"].description_of(rid) for rid in ids]
  scores = matcher.score(texts, [images[2]] * len(texts))
  indices, ranked = matcher.rank_texts(images[2], texts, top_k=4)
  np.testing.assert_array_equal(indices, np.argsort(-scores, kind="stable")[:4])
  np.testing.assert_allclose(ranked, scores[indices], atol=1e-6)


def count_backbone_images(matcher, monkeypatch):
  """Wraps the scorer's backbone call; returns the list of batch sizes it is called with."""
  calls = []
  backbone = matcher.scorer.patch_features

  def counting(pixels):
    calls.append(int(pixels.shape[0]))
    return backbone(pixels)
  monkeypatch.setattr(matcher.scorer, "patch_features", counting)
  return calls


def test_an_image_goes_through_the_backbone_once_per_call(run, matcher, pairs, monkeypatch):
  calls = count_backbone_images(matcher, monkeypatch)
  image = run["paths"][int(pairs["image_ids"][0])]
  texts = [f"{pairs['texts'][i % len(pairs['texts'])]} variant {i}" for i in range(100)]
  indices, _ = matcher.rank_texts(image, texts)
  assert calls == [1] and sorted(indices) == list(range(100))
  assert matcher.last_stats["images"] == 1 and matcher.last_stats["pairs"] == 100

  # 12 pairs over 3 distinct files (the same path repeated), 2 images per backbone step.
  del calls[:]
  paths = [run["paths"][int(rid)] for rid in pairs["image_ids"][:3]] * 4
  matcher.images_per_step = 2
  try:
    scores = matcher.score(pairs["texts"][:12], paths)
  finally:
    matcher.images_per_step = 8
  assert calls == [2, 1]
  np.testing.assert_allclose(scores, matcher.score(pairs["texts"][:12], paths), atol=1e-6)


def test_images_of_any_size_use_the_runs_resize_policy(matcher):
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, size=[300, 180, 3], dtype=np.uint8)
  text = "black cotton shirt with long sleeves"
  padded = image_loading.load_image(photo, resize="pad")
  np.testing.assert_allclose(matcher.score(text, Image.fromarray(photo)),
                             matcher.score(text, padded), atol=1e-6)
  features = matcher.patch_features([photo, padded])
  assert features.shape == (2, 64, 16)
  np.testing.assert_allclose(features[0], features[1], atol=1e-6)


def test_clear_errors(run, matcher, tmp_path):
  from fashionbert_tf import Matcher  # pylint: disable=g-import-not-at-top
  image = run["paths"][min(run["images"])]
  for path, message in ((tmp_path, "neither a training run"),
                        (tmp_path / "absent", "no such directory")):
    with pytest.raises(FileNotFoundError, match=message) as error:
      Matcher.load(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
  with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
    Matcher.load(7)
  with pytest.raises(ValueError, match="image resize policy 'squash'"):
    Matcher.load(run["model_dir"], image_resize="squash")
  with pytest.raises(TypeError, match=r"score: texts must be .*got int"):
    matcher.score(123, image)
  with pytest.raises(TypeError, match=r"score: images\[1\] must be .*got dict"):
    matcher.score(["a shirt", "a dress"], [image, {"path": image}])
  with pytest.raises(TypeError, match=r"texts\[0\] must be a string, got bytes"):
    matcher.score([b"a shirt"], [image])
  with pytest.raises(ValueError, match="2 texts but 1 image"):
    matcher.score(["a shirt", "a dress"], [image])
  with pytest.raises(ValueError, match="one text but 2 images"):
    matcher.score("a shirt", [image, image])
  with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
    matcher.score(["a shirt", "  "], [image, image])
  with pytest.raises(ValueError, match="text is empty"):
    matcher.rank_images("", [image])
  with pytest.raises(TypeError, match="images must be a list of images"):
    matcher.rank_images("a shirt", image)
  with pytest.raises(ValueError, match="top_k must be at least 1"):
    matcher.rank_texts(image, ["a shirt"], top_k=0)
  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"\xff\xd8 not a jpeg")
  with pytest.raises(image_loading.ImageLoadError, match=r"images\[1\]: image .*broken.jpg") as err:
    matcher.score(["a shirt", "a dress"], [image, str(broken)])
  assert err.value.reason == "undecodable"
  with pytest.raises(image_loading.ImageLoadError, match=r"image: image file not found: .*nope"):
    matcher.rank_texts(str(tmp_path / "nope.png"), ["a shirt"])
  assert matcher.score([], []).shape == (0,)


def readme_python_api_block():
  """The python code block of README.md's `## Python API` section (the last section)."""
  with open(README, encoding="utf-8") as f:
    text = f.read()
  section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
  assert len(section.strip().splitlines()) <= 14, "the section is at most 15 lines"
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  assert len(blocks) == 1
  assert len(blocks[0].strip().splitlines()) <= 10
  return blocks[0]


def test_readme_python_api_block_runs(run, monkeypatch, capsys):
  """The README's example, as written, in a folder where runs/toy is the tiny run and the photos
  it names exist (written here from validation images, at other sizes and formats)."""
  code = readme_python_api_block()
  monkeypatch.chdir(run["root"])
  ids = sorted(run["images"])
  names = sorted(set(re.findall(r"\"([\w-]+\.(?:jpg|png|webp))\"", code)))
  assert names, "the README example names its photos"
  for name, rid in zip(names, ids):
    Image.fromarray(run["images"][rid]).resize((300, 420)).save(name)
  namespace = {}
  exec(compile(code, "README.md (## Python API)", "exec"), namespace)  # pylint: disable=exec-used
  printed = capsys.readouterr().out
  assert re.search(r"0\.\d+", printed), printed
  assert type(namespace["matcher"]).__name__ == "Matcher"
