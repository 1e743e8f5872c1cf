"""Where precomputed patch features are written and where training reads them (data/pipeline.py)."""

import os

from fashionbert_tf.configs.data import DataConfig
from fashionbert_tf.data import pipeline
from fashionbert_tf.data import records


def _touch_shard(directory, split="train"):
  os.makedirs(directory, exist_ok=True)
  path = records.split_file_pattern(directory, split).replace("?????-of-?????", "00000-of-00001")
  open(path, "wb").close()


def test_features_go_where_the_config_reads_them(tmp_path):
  config = DataConfig(tfrecord_dir=str(tmp_path / "records"),
                      features_tfrecord_dir=str(tmp_path / "effnet_colour"))
  assert pipeline.features_output_dir(config) == str(tmp_path / "effnet_colour")
  assert pipeline.features_dir(config) == pipeline.features_output_dir(config)


def test_without_a_features_folder_they_go_next_to_the_records_and_are_found_there(tmp_path):
  config = DataConfig(tfrecord_dir=str(tmp_path / "records") + "/")
  written = pipeline.features_output_dir(config)
  assert written == str(tmp_path / "records_features")
  assert pipeline.features_dir(config) == config.tfrecord_dir   # nothing written yet
  _touch_shard(written)
  assert pipeline.features_dir(config) == written

