"""serving package of FashionBERT-TF."""
