"""data package of FashionBERT-TF."""
