"""modeling package of FashionBERT-TF."""
