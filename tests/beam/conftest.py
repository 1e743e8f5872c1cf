"""The Apache Beam tests: run only in the `beam` extra's own venv (Beam pins protobuf / pillow
below what the main venv has), by `.ci/run` after the main suite:

  /work/venv-beam/bin/python -m pytest -q -c tests/beam/pytest.ini tests/beam

`tests/conftest.py` leaves this folder out of the main run (`collect_ignore`); `-c
tests/beam/pytest.ini` makes this folder the root, so the main conftest is not loaded here.
"""
