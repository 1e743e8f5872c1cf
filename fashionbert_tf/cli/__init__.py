"""The `fashionbert` command line: one absl app per command, dispatched by `main.py`."""
