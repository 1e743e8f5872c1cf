"""Pretraining: the MLM + MPM + TIA losses, adaptive loss weights (Eq. 4-6), optimizer, loop.

Start at `pretrain.run_pretraining(config)`; the train step is `pretrainer.py`, the loss weights
`adaptive_loss.py`.
"""
