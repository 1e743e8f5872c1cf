"""Toy descriptions with one attribute swapped: what `tools/probe_attribute_alignment.py` scores.

`swapped_description(product, attribute)` returns the product's clean description (lower case)
and the same text with one attribute phrase replaced by another value of that attribute ("in navy"
-> "in <another colour>"; "long sleeve" <-> "short sleeve"; " hoodie in " -> " <another garment>
in "), or None when the product cannot be swapped (no such attribute). The replacement is picked
deterministically from the product id. A pretraining checkpoint whose TIA head gives the true text
the higher P(match) for most products aligns the attribute between text and image.
"""

from fashionbert_tf.data.toy import fashion_gen

SLEEVE_SWAP = {"long sleeve": "short sleeve", "short sleeve": "long sleeve"}


def _swap_colour(product, text):
  others = sorted(set(fashion_gen.COLOURS) - {product.colour, product.second_colour})
  phrase = f"in {product.colour}"
  if phrase not in text:
    return None
  return text.replace(phrase, f"in {others[product.product_id % len(others)]}", 1)


def _swap_sleeve(product, text):
  if product.sleeve not in SLEEVE_SWAP:
    return None
  return text.replace(product.sleeve, SLEEVE_SWAP[product.sleeve], 1)


def _swap_garment(product, text):
  word = fashion_gen.GARMENT_WORDS[product.shape]
  phrase = f" {word} in "   # "... linen hoodie in beige ..."
  if phrase not in text:
    return None
  others = sorted(set(fashion_gen.GARMENT_WORDS.values()) - {word})
  return text.replace(phrase, f" {others[product.product_id % len(others)]} in ", 1)


# attribute -> (product, lower-case clean description) -> the description with it swapped, or None
# when the product cannot be swapped (no such attribute).
SWAPS = {"colour": _swap_colour, "sleeve": _swap_sleeve, "garment": _swap_garment}


def swapped_description(product, attribute):
  """(true, swapped) lower-case clean descriptions, or None when the product cannot be swapped."""
  text = fashion_gen.describe(product).lower()
  swapped = SWAPS[attribute](product, text)
  return None if swapped is None else (text, swapped)
