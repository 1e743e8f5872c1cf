"""training package of FashionBERT-TF."""
