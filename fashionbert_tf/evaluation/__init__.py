"""evaluation package of FashionBERT-TF."""
