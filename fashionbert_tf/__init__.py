"""FashionBERT-TF: a TensorFlow 2 / Keras reproduction of FashionBERT (Gao et al., SIGIR 2020).

Packages, bottom to top (each imports only from those below it): configs -> utils -> data ->
modeling -> training | evaluation -> serving | search | product_search -> cli. Start at
`cli/main.py` (the `fashionbert` commands) or `modeling/model_builder.py` (the model).
"""

__version__ = "0.1.0"
