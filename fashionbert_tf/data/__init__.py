"""Fashion-Gen into training batches: records, tokenization, masking, pairing, the tf.data pipeline.

Start at `contract.py` (what a batch holds), `prepare.py` (prepare-data: records, negatives index,
candidate sets) and `pipeline.py` (the pretraining input). Record sources are in `sources/`, the
seeded toy data in `toy/`; `search_logs.py` is the search logs' format.
"""
