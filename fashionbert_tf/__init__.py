"""FashionBERT-TF: a TensorFlow 2 / Keras reproduction of FashionBERT (Gao et al., SIGIR 2020)."""

__version__ = "0.1.0"
