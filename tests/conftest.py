"""Shared test fixtures: a tiny WordPiece vocab and a tiny prepared toy Fashion-Gen (session-scoped).

Everything is written under one session tmp dir by the fixtures themselves; nothing is downloaded.
"""

import os
import string

import pytest

from fashionbert_tf.data import config as data_config_lib
from fashionbert_tf.data import toy_fashiongen

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
