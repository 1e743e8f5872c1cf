"""cli package of FashionBERT-TF."""
