"""Writes the toy search logs (catalogue, train / test sessions split by query), seeded, offline.

  python tools/make_toy_search_logs.py --config configs/toy_search.yaml [--params_override ...]

Same as what `fashionbert finetune` does when `search.logs_dir` is a missing toy folder; this
always (re)writes. Format: fashionbert_tf/data/search_logs.py and data/README.md.
"""

import json

from absl import app
from absl import logging

from fashionbert_tf.cli import common_flags
from fashionbert_tf.search import logs


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  info = logs.write_toy_logs(common_flags.config_from_flags())
  print(json.dumps(info["splits"], indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
