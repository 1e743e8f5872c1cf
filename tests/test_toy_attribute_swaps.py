"""The attribute swaps tools/probe_attribute_alignment.py scores (data/toy_attribute_swaps.py):
each replaces one attribute phrase of a toy description by another value of that attribute and
changes nothing else (the probe's P(true) vs P(swapped) is then about that attribute alone)."""

import pytest

from fashionbert_tf.data.toy import attribute_swaps as toy_attribute_swaps
from fashionbert_tf.data.toy import fashion_gen as toy_fashiongen
from fashionbert_tf.data.toy import search_log_generator as toy_search_logs


@pytest.fixture(scope="module")
def products():
  return toy_search_logs.toy_catalogue_products(2000, 300, 0, "validation")


def _alternatives(product, attribute):
  """(phrase in the true description, the phrases it may become)."""
  if attribute == "colour":
    return (f"in {product.colour}",
            [f"in {c}" for c in toy_fashiongen.COLOURS
             if c not in (product.colour, product.second_colour)])
  if attribute == "sleeve":
    return product.sleeve, [s for s in ("long sleeve", "short sleeve") if s != product.sleeve]
  word = toy_fashiongen.GARMENT_WORDS[product.shape]
  return f" {word} in ", [f" {g} in " for g in toy_fashiongen.GARMENT_WORDS.values() if g != word]


@pytest.mark.parametrize("attribute", ["colour", "sleeve", "garment"])
def test_swaps_change_one_attribute(products, attribute):
  swapped_count = 0
  for product in products:
    pair = toy_attribute_swaps.swapped_description(product, attribute)
    if pair is None:
      assert attribute == "sleeve" and product.sleeve not in ("long sleeve", "short sleeve")
      continue
    swapped_count += 1
    true, swapped = pair
    phrase, alternatives = _alternatives(product, attribute)
    assert phrase in true and true != swapped
    assert any(swapped == true.replace(phrase, other, 1) for other in alternatives), (true, swapped)
  # Every product has a colour and a garment; sleeves only the sleeved ones.
  assert swapped_count >= (100 if attribute == "sleeve" else len(products))
