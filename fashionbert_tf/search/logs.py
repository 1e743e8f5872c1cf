"""The search logs a fine-tuning run reads: found in `search.logs_dir`, or generated when toy.

`ensure_search_logs(config)` returns the logs folder, writing the toy logs there first when it is
missing and named like a toy folder ("toy" in the path) — the way `fashionbert demo` writes the
toy Fashion-Gen files. Real logs are never generated: a missing real folder is an error.
"""

import dataclasses
import json
import os
import time

from absl import logging

from fashionbert_tf.data import search_logs
from fashionbert_tf.data.toy import search_log_generator


def toy_settings(search_config):
  """`ToySearchLogSettings` from the `search.toy_*` options."""
  return dataclasses.replace(
      search_log_generator.ToySearchLogSettings(),
      num_sessions=search_config.toy_num_sessions,
      impressions_per_query=search_config.toy_impressions_per_query,
      click_rate_match=search_config.toy_click_rate_match,
      click_rate_partial=search_config.toy_click_rate_partial,
      click_rate_other=search_config.toy_click_rate_other,
      image_attribute_rate=search_config.toy_image_attribute_rate,
      title_match_partial_rate=search_config.toy_title_match_partial_rate,
      max_partial_impressions=search_config.toy_max_partial_impressions,
      image_attributes=tuple(search_config.toy_image_attributes),
      title_shows_colour=search_config.toy_title_shows_colour,
      test_fraction=search_config.toy_test_fraction,
      seed=search_config.toy_seed)


def write_toy_logs(config):
  """Writes the toy search logs for the toy products named by the `data` section; returns info."""
  data = config.data
  products = search_log_generator.toy_catalogue_products(
      data.toy_num_train_products, data.toy_num_validation_products, data.toy_seed,
      config.search.toy_catalogue_split)
  start = time.time()
  info = search_log_generator.write_toy_search_logs(config.search.logs_dir, products,
                                               toy_settings(config.search))
  logging.info("toy search logs written to %s in %.1f s: %s", config.search.logs_dir,
               time.time() - start, info["splits"])
  return info


def _check_toy_settings(logs_dir, search_config):
  """Raises ValueError when `logs_dir` holds toy logs drawn with other settings than the config's
  `search.toy_*` (a stale folder would otherwise be read silently); real logs pass."""
  info = search_logs.read_info(logs_dir)
  if info.get("generator") != search_log_generator.GENERATOR:
    return
  # Through JSON, as info.json holds them (tuples become lists).
  wanted = json.loads(json.dumps(dataclasses.asdict(toy_settings(search_config))))
  written = info.get("settings", {})
  differ = [f"{name} {written[name]!r} (config: {value!r})"
            for name, value in wanted.items() if name in written and written[name] != value]
  if differ:
    raise ValueError(
        f"toy search logs in {logs_dir} were written with other settings: {'; '.join(differ)}. "
        "Delete the folder to regenerate them, or set search.logs_dir to another folder")


def ensure_search_logs(config):
  """`search.logs_dir`, with the toy logs generated there first when missing and toy-named.

  Raises:
    FileNotFoundError: the folder lacks catalogue / train / test files and is not a toy folder.
    ValueError: the folder holds toy logs drawn with other `search.toy_*` settings.
  """
  logs_dir = config.search.logs_dir
  toy_folder = "toy" in logs_dir   # generated here when missing, so it must match the config
  needed = [os.path.join(logs_dir, name) for name in
            (search_logs.CATALOGUE_FILE, search_logs.TRAIN_FILE, search_logs.TEST_FILE)]
  if all(os.path.exists(path) for path in needed):
    if toy_folder:
      _check_toy_settings(logs_dir, config.search)
    return logs_dir
  if not toy_folder:
    missing = [path for path in needed if not os.path.exists(path)]
    raise FileNotFoundError(
        f"search logs missing: {', '.join(missing)} (search.logs_dir={logs_dir}); only toy logs "
        "(a folder with 'toy' in its path) are generated — see data/README.md, 'Search logs'")
  write_toy_logs(config)
  return logs_dir
