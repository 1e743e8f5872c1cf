"""tools/probe_attribute_alignment.py's swaps: each replaces one attribute phrase of a toy
description by another value of that attribute and changes nothing else (the probe's P(true) vs
P(swapped) is then about that attribute alone)."""

import importlib.util
import os

import pytest

from fashionbert_tf.data import toy_fashiongen
from fashionbert_tf.data import toy_search_logs

_TOOL = os.path.join(os.path.dirname(__file__), "..", "tools", "probe_attribute_alignment.py")


@pytest.fixture(scope="module")
def probe():
  spec = importlib.util.spec_from_file_location("probe_attribute_alignment", _TOOL)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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
def test_swaps_change_one_attribute(probe, products, attribute):
  swapped_count = 0
  for product in products:
    pair = probe.swapped_description(product, attribute)
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
