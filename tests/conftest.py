"""Shared test fixtures: a tiny WordPiece vocab and a tiny prepared toy Fashion-Gen
(session-scoped), a runner for CLI command modules and a fresh-process SavedModel check.

Everything is written under one session tmp dir by the fixtures themselves; nothing is downloaded.
"""

import json
import logging
import os
import string
import subprocess
import sys
import textwrap

import pytest

from fashionbert_tf.configs import data as data_config_lib
from fashionbert_tf.data.toy import fashion_gen as toy_fashiongen

# The Apache Beam tests need the `beam` extra's own venv (tests/beam/conftest.py; `.ci/run`).
collect_ignore = ["beam"]

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Whole words in the tiny vocab; every other word is split into single-character WordPieces, so
# tests see both one-piece and many-piece words.
TINY_WORDS = ("in", "with", "at", "sleeve", "long", "short", "shirt", "t", "dress", "black",
              "white", "navy", "red", "green", "stripes", "dots", "checks", "collar", "neck",
              "front", "back", "fit", "made", "cotton", "wool", "pocket", "button", "closure")


def write_tiny_vocab(path):
  """Specials, [unused0..9], whole words, single characters and ##characters. Returns the path."""
  chars = string.ascii_lowercase + string.digits
  tokens = SPECIALS + [f"[unused{i}]" for i in range(10)] + list(TINY_WORDS)
  tokens += list(chars) + list(string.punctuation) + [f"##{c}" for c in chars]
  tokens = list(dict.fromkeys(tokens))     # one-letter words ("t") are also characters
  with open(path, "w", encoding="utf-8") as handle:
    handle.write("\n".join(tokens) + "\n")
  return path


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("data_session")


@pytest.fixture(scope="session")
def tiny_vocab_file(session_dir):
  return write_tiny_vocab(str(session_dir / "vocab.txt"))


def make_data_config(root, vocab_file, **overrides):
  """A `DataConfig` whose files all live under `root` (a str)."""
  values = dict(
      train_hdf5=os.path.join(root, "toy_train.h5"),
      validation_hdf5=os.path.join(root, "toy_validation.h5"),
      tfrecord_dir=os.path.join(root, "tfrecords"),
      candidates_file=os.path.join(root, "tfrecords", "candidates.json"),
      num_shards=2, num_image_queries=6, num_text_queries=6, num_candidates=8,
      vocab_file=vocab_file, max_predictions_per_seq=24, shuffle_buffer=64,
      pairing_chunk_size=16)
  values.update(overrides)
  return data_config_lib.DataConfig(**values)


@pytest.fixture(scope="session")
def toy_data_config(session_dir, tiny_vocab_file):
  """A tiny toy Fashion-Gen (24 train / 12 validation products), prepared into TFRecords."""
  from fashionbert_tf.data import prepare  # pylint: disable=g-import-not-at-top
  config = make_data_config(str(session_dir / "toy"), tiny_vocab_file)
  toy_fashiongen.make_toy_fashiongen(config.train_hdf5, config.validation_hdf5,
                                     num_train_products=24, num_validation_products=12,
                                     seed=3, num_empty_descriptions=1)
  prepare.prepare_dataset(config)
  return config


def _run_cli(module, argv):
  """Runs `module.main` (a `fashionbert_tf.cli` command) with `argv` parsed into absl flags; the
  flags are reset before and after, so one test's flags do not leak into the next."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  # Parsing and resetting --verbosity sets absl's Python logger to WARNING; its level is restored
  # after, so later tests' caplog sees INFO records again.
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  flags.FLAGS.unparse_flags()
  try:
    module.main(flags.FLAGS(argv))
  finally:
    flags.FLAGS.unparse_flags()
    absl_logger.setLevel(level)


@pytest.fixture(scope="session")
def run_cli():
  """`run_cli(module, argv)`: a CLI command module's `main` on `argv` (flags reset around it)."""
  return _run_cli


# Loads the SavedModel (argv[1]) with TensorFlow and tensorflow_text only, calls `serving_default`
# on the raw keys (argv[3], JSON) and `score_features` on the model inputs of the request (argv[2],
# .npz) and prints one JSON line: both outputs named argv[4] and the project modules imported.
_FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # registers the classic BertTokenizer ops
    loaded = tf.saved_model.load(sys.argv[1])
    request = np.load(sys.argv[2], allow_pickle=True)
    raw_keys, output_key = json.loads(sys.argv[3]), sys.argv[4]
    served = loaded.signatures["serving_default"](**{
        key: tf.constant(request[key].tolist()) for key in raw_keys})
    features = loaded.signatures["score_features"](**{
        key: tf.constant(request[key]) for key in
        ("input_word_ids", "input_mask", "input_type_ids", "patch_features")})
    print(json.dumps({
        "serving_default": served[output_key].numpy().tolist(),
        "score_features": features[output_key].numpy().tolist(),
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in (
            "fashionbert_tf", "official", "tf_keras"))}))
    """)


def _signatures_in_fresh_process(saved_model_path, request_file, raw_keys, output_key):
  """Both serving signatures of a SavedModel, called in a new Python process.

  Args:
    saved_model_path: the exported SavedModel folder.
    request_file: .npz holding the raw request (`raw_keys`, object arrays of strings / encoded
      images) and the model inputs input_word_ids, input_mask, input_type_ids [B, T] and
      patch_features [B, 64, D] of the same request.
    raw_keys: the `serving_default` input names, e.g. ("text", "image").
    output_key: the output both signatures are read for, e.g. "match_probability".

  Returns:
    dict: "serving_default" and "score_features" (lists of B floats), "modules" (the fashionbert_tf,
    official and tf_keras modules the process imported: sorted list).
  """
  result = subprocess.run(
      [sys.executable, "-c", _FRESH_PROCESS_SCRIPT, saved_model_path, request_file,
       json.dumps(list(raw_keys)), output_key],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def signatures_in_fresh_process():
  """`signatures_in_fresh_process(path, request_file, raw_keys, output_key)` (see
  `_signatures_in_fresh_process`): a SavedModel served without this project's code."""
  return _signatures_in_fresh_process
