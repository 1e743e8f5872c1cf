"""search package of FashionBERT-TF: FashionBERT in e-commerce search (paper 3.4)."""
