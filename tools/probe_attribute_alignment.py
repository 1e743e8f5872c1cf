"""Which toy attributes a pretraining checkpoint aligns between text and image: attribute swaps.

  python tools/probe_attribute_alignment.py --config configs/toy.yaml [--checkpoint runs/toy/ckpt-500]
      [--attributes colour,sleeve,garment] [--split validation] [--output probe.json]

For every toy product of the split that has the attribute (the products are regenerated from the
toy generator's seeds, as the search logs are), its clean description (lower case) is scored with
its own image by the TIA head, then the same description with that one attribute swapped ("navy"
-> another colour; "long sleeve" <-> "short sleeve"; "hoodie" -> another garment;
`fashionbert_tf/data/toy/attribute_swaps.py`). A checkpoint that aligns the attribute gives
the true description the higher P(match) for most products; 0.5 is chance. Printed per attribute:
products, share with P(true) > P(swapped), mean P(true) - P(swapped); written as JSON with
--output.

Why it matters (README, "Search (paper 3.4)"): FashionBERT's edge in search comes from what its
pretraining aligned; search logs the image decides on an attribute it did not align gain nothing
from the cross-encoder.
"""

import json

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.cli import common_flags
from fashionbert_tf.data import tokenization
from fashionbert_tf.data.toy import attribute_swaps
from fashionbert_tf.data.toy import search_log_generator
from fashionbert_tf.evaluation import pair_scoring
from fashionbert_tf.evaluation import pretraining_run as restore_lib
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.search import catalogue as catalogue_lib

CHECKPOINT = flags.DEFINE_string("checkpoint", None, "checkpoint prefix or run folder (default: "
                                 "the latest checkpoint of the config's train.model_dir)")
ATTRIBUTES = flags.DEFINE_list("attributes", ["colour", "sleeve", "garment"],
                               "attributes to swap: colour, sleeve, garment")
SPLIT = flags.DEFINE_enum("split", "validation", ["train", "validation"],
                          "which toy products (validation: the search catalogue's)")
OUTPUT = flags.DEFINE_string("output", None, "write the results as JSON here")

def match_probabilities(model, tokenizer, texts, features, max_text_length):
  """P(match) float [N] of (text, patch features [N, 64, D]) pairs."""
  rows = pair_scoring.tokenize_texts(tokenizer, texts, max_text_length)
  ids, mask, types = pair_scoring.pad_batch([rows[text] for text in texts])
  return scoring.model_match_probability(
      model, tf.constant(ids), tf.constant(mask), tf.constant(types),
      tf.constant(features)).numpy().astype(np.float64)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config = common_flags.config_from_flags()
  unknown = [a for a in ATTRIBUTES.value if a not in attribute_swaps.SWAPS]
  if unknown:
    raise app.UsageError(f"--attributes: unknown {unknown}; expected any of "
                         f"{list(attribute_swaps.SWAPS)}")
  model, path, _ = restore_lib.restore_model(config, CHECKPOINT.value)
  data = config.data
  products = search_log_generator.toy_catalogue_products(
      data.toy_num_train_products, data.toy_num_validation_products, data.toy_seed, SPLIT.value)
  catalogue = catalogue_lib.compute_catalogue_features(
      model.patch_feature_extractor, config, [p.product_id for p in products])
  tokenizer = tokenization.build_tokenizer(data)
  results = {"checkpoint": path, "split": SPLIT.value, "attributes": {}}
  for attribute in ATTRIBUTES.value:
    pairs = [(p, attribute_swaps.swapped_description(p, attribute)) for p in products]
    pairs = [(p, texts) for p, texts in pairs if texts is not None]
    true_p, swapped_p = [], []
    for begin in range(0, len(pairs), 64):
      chunk = pairs[begin:begin + 64]
      features = catalogue.features[[catalogue.index_of[p.product_id] for p, _ in chunk]]
      for index, out in ((0, true_p), (1, swapped_p)):
        out.append(match_probabilities(model, tokenizer, [t[index] for _, t in chunk], features,
                                       data.max_text_length))
    true_p, swapped_p = np.concatenate(true_p), np.concatenate(swapped_p)
    results["attributes"][attribute] = {
        "products": len(pairs), "true_above_swapped": float(np.mean(true_p > swapped_p)),
        "mean_probability_difference": float(np.mean(true_p - swapped_p))}
  print(f"{'attribute':<10}{'products':>9}{'P(true)>P(swapped)':>20}{'mean dP':>9}   {path}")
  for attribute, row in results["attributes"].items():
    print(f"{attribute:<10}{row['products']:>9}{row['true_above_swapped']:>20.3f}"
          f"{row['mean_probability_difference']:>+9.3f}")
  if OUTPUT.value:
    with open(OUTPUT.value, "w", encoding="utf-8") as handle:
      json.dump(results, handle, indent=2)


if __name__ == "__main__":
  app.run(main)
