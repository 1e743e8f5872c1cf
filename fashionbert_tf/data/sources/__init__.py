"""Where image records come from: Fashion-Gen's HDF5 files (`fashion_gen_hdf5.py`) or the
`fashion_gen` TFDS builder (`fashion_gen_tfds_builder.py`, read through `fashion_gen_tfds.py`)."""
