"""Evaluation of a pretrained FashionBERT (paper 3.1): TIA accuracy and Rank@1/5/10.

Start at `evaluate.run_evaluation(config)`; the protocol is `rank_at_k.py`, the pair scoring
`pair_scoring.py` and `scoring.py`, the restore of a run `pretraining_run.py`.
"""
