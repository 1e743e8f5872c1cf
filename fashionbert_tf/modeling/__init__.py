"""The FashionBERT model: patch features, patch embedding, the BERT encoder, the three heads.

Start at `model_builder.build_fashionbert(model_config)`. Backbones are in `backbones/`, pre-trained
BERT readers in `checkpoints/`; `feature_precompute.py` and `feature_statistics.py` prepare patch
features offline; `inference_precision.py` and `fused_inference.py` serve the model fast.
"""
