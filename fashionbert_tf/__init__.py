"""FashionBERT-TF: a TensorFlow 2 / Keras reproduction of FashionBERT (Gao et al., SIGIR 2020).

Packages, bottom to top (each imports only from those below it): configs -> utils -> data ->
modeling -> training | evaluation -> serving | search | product_search -> cli. Start at
`cli/main.py` (the `fashionbert` commands), `modeling/model_builder.py` (the model) or `api.py`.

`fashionbert_tf.Matcher` (api.py) scores (text, image) pairs from Python; it is imported on first
use, so `import fashionbert_tf` (and the CLI) stays free of TensorFlow until a command needs it.
"""

__version__ = "0.1.0"
__all__ = ["Matcher"]


def __getattr__(name):
  if name == "Matcher":
    from fashionbert_tf.api import Matcher  # pylint: disable=g-import-not-at-top
    return Matcher
  raise AttributeError(f"module 'fashionbert_tf' has no attribute {name!r}")
