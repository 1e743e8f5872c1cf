"""`fashionbert prepare-data`: Fashion-Gen HDF5 -> sharded TFRecords + retrieval candidate sets.

  fashionbert prepare-data --config configs/toy.yaml
  fashionbert prepare-data --config configs/paper.yaml   # real Fashion-Gen, see data/README.md

Reads data.train_hdf5 and data.validation_hdf5, writes data.tfrecord_dir and
data.candidates_file (see fashionbert_tf/data/prepare.py).

With `--params_override data.source=tfds` it is a thin wrapper over the `fashion_gen` TensorFlow
Datasets builder (fashionbert_tf/data/sources/fashion_gen_tfds_builder.py, config
`data.tfds_config`): the dataset is built into data.tfds_data_dir (reused when already prepared),
then the candidate sets, negatives index and dataset_info.json are written as above
(data/sources/fashion_gen_tfds.py).

With `data.source: catalogue` it reads a retailer's CSV / JSON Lines of photos and texts
(`data.catalogue_file`; docs/catalogue.md); a malformed catalogue or a bad row with
`data.on_bad_row: fail` is one line naming the file and line.
"""

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.cli import common_flags
from fashionbert_tf.data.sources import catalogue_file as catalogue_source
from fashionbert_tf.data import prepare

BEAM_PIPELINE_OPTIONS = flags.DEFINE_string(
    "beam_pipeline_options", "",
    "With data.source=tfds: build the TFDS dataset with Apache Beam (the `beam` extra), options as "
    "`tfds build` takes them, e.g. `runner=DirectRunner,direct_num_workers=8,"
    "direct_running_mode=multi_processing`; empty = no Beam.")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config = common_flags.config_from_flags()
  if BEAM_PIPELINE_OPTIONS.value and config.data.source != "tfds":
    raise app.UsageError("--beam_pipeline_options needs data.source=tfds (the fashion_gen builder)")
  try:
    beam_options = None
    if BEAM_PIPELINE_OPTIONS.value:
      # Lazy: tensorflow_datasets' import costs ~10% of TensorFlow's; only Beam builds need it.
      from fashionbert_tf.data.sources import fashion_gen_tfds  # pylint: disable=g-import-not-at-top
      beam_options = fashion_gen_tfds.beam_pipeline_options(BEAM_PIPELINE_OPTIONS.value)
    prepare.prepare_dataset(config.data, beam_options)
  except (catalogue_source.CatalogueFormatError, catalogue_source.BadRowError) as error:
    raise app.UsageError(str(error)) from None
  except FileNotFoundError as error:
    if config.data.source != "catalogue":
      raise
    raise app.UsageError(str(error)) from None
