"""Seeded toy data in Fashion-Gen's schema, for tests and the CPU demo.

`fashion_gen.py` draws toy products, images and HDF5 files; `attribute_swaps.py` the attribute-swap
probes; `search_log_generator.py` the toy search logs, whose relevance truth (the oracles the
search evaluation reads) is `search_relevance.py`.
"""
