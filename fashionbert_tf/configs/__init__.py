"""The experiment config: dataclasses only, importing nothing else of the library.

`experiment.load_config(yaml_file, overrides)` builds an `ExperimentConfig` from configs/*.yaml; its
sections are `data.py`, `model.py`, `train.py`, `evaluation.py`, `search.py`, `product_search.py`.
"""
