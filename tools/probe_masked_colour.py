"""Does a pretraining checkpoint's encoder read the colour from the image? Masked colour words.

  python tools/probe_masked_colour.py --config configs/toy.yaml [--checkpoint runs/toy/ckpt-1100]
      [--split validation] [--output masked_colour.json]

For every toy product of the split whose main colour is one WordPiece (13 of the 14 toy colours;
"sky blue" is two words), the main colour word of its clean description ("... in [MASK] with navy
stripes") is replaced by [MASK] and the MLM head's logits over the colour words pick one. Text
alone cannot tell the colour (the generator draws it independently of every other word), so
accuracy above chance (1/13) means the encoder carries the colour from the patches to the masked
word. The same is scored with each product's patch features swapped for another product's
(shuffled within the split): accuracy then falls to chance, unless the text leaks it.

The attribute-swap probe (`tools/probe_attribute_alignment.py`) asks the TIA head instead: a
checkpoint can read colour here and still not use it to match
(docs/experiments/paper_recipe_demo.md).
"""

import json

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from fashionbert_tf.cli import common_flags
from fashionbert_tf.data import tokenization
from fashionbert_tf.data.toy import fashion_gen
from fashionbert_tf.data.toy import search_log_generator
from fashionbert_tf.evaluation import pair_scoring
from fashionbert_tf.evaluation import pretraining_run as restore_lib
from fashionbert_tf.search import catalogue as catalogue_lib

CHECKPOINT = flags.DEFINE_string("checkpoint", None, "checkpoint prefix or run folder (default: "
                                 "the latest checkpoint of the config's train.model_dir)")
SPLIT = flags.DEFINE_enum("split", "validation", ["train", "validation"], "which toy products")
OUTPUT = flags.DEFINE_string("output", None, "write the results as JSON here")
SHUFFLE_SEED = 0


def colour_predictions(model, token_rows, positions, features, colour_ids):
  """Indices into `colour_ids` [N] of the colour the MLM head ranks first at each masked position.

  token_rows: N int32 id rows with [MASK] at `positions` (int [N]); features float32 [N, 64, D].
  """
  predictions = []
  for begin in range(0, len(token_rows), 64):
    ids, mask, types = pair_scoring.pad_batch(token_rows[begin:begin + 64])
    outputs = model({"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask),
                     "input_type_ids": tf.constant(types),
                     "patch_features": tf.constant(features[begin:begin + 64]),
                     "masked_lm_positions": tf.constant(
                         np.asarray(positions[begin:begin + 64], np.int32)[:, None])},
                    training=False)
    logits = outputs["mlm_logits"].numpy().reshape(len(ids), -1)     # [b, vocab]
    predictions.append(np.argmax(logits[:, colour_ids], axis=1))
  return np.concatenate(predictions)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  config = common_flags.config_from_flags()
  model, path, _ = restore_lib.restore_model(config, CHECKPOINT.value)
  data = config.data
  tokenizer = tokenization.build_tokenizer(data)
  vocab = {token: index
           for index, token in enumerate(tokenization.read_vocab(tokenizer.vocab_file))}
  colours = [colour for colour in sorted(fashion_gen.COLOURS) if colour in vocab]
  colour_ids = [vocab[colour] for colour in colours]
  products = [p for p in search_log_generator.toy_catalogue_products(
      data.toy_num_train_products, data.toy_num_validation_products, data.toy_seed, SPLIT.value)
              if p.colour in vocab]
  if not products:
    raise app.UsageError(f"no {SPLIT.value} toy product has a one-WordPiece colour in "
                         f"{tokenizer.vocab_file}")
  catalogue = catalogue_lib.compute_catalogue_features(
      model.patch_feature_extractor, config, [p.product_id for p in products])
  texts = [fashion_gen.describe(p).lower() for p in products]
  token_ids = pair_scoring.tokenize_texts(tokenizer, texts, data.max_text_length)
  rows, positions = [], []
  for product, text in zip(products, texts):
    row = np.array(token_ids[text])
    # The main colour follows the first "in" ("... wool hoodie in navy with ..."): its first
    # occurrence after "in" is the one masked.
    position = next(i for i in range(1, len(row)) if row[i] == vocab[product.colour] and
                    row[i - 1] == vocab["in"])
    row[position] = vocab["[MASK]"]
    rows.append(row)
    positions.append(position)
  own = catalogue.features[[catalogue.index_of[p.product_id] for p in products]]
  shuffled = own[np.random.default_rng(SHUFFLE_SEED).permutation(len(products))]
  truth = np.array([colours.index(p.colour) for p in products])
  results = {"checkpoint": path, "split": SPLIT.value, "products": len(products),
             "colours": len(colours), "chance": 1.0 / len(colours)}
  for name, features in (("own_images", own), ("shuffled_images", shuffled)):
    predictions = colour_predictions(model, rows, positions, features, colour_ids)
    results[name] = float(np.mean(predictions == truth))
  print(f"masked main colour, {len(products)} products, {len(colours)} colours (chance "
        f"{results['chance']:.3f}): accuracy {results['own_images']:.3f} with their own images, "
        f"{results['shuffled_images']:.3f} with shuffled images   {path}")
  if OUTPUT.value:
    with open(OUTPUT.value, "w", encoding="utf-8") as handle:
      json.dump(results, handle, indent=2)


if __name__ == "__main__":
  app.run(main)
