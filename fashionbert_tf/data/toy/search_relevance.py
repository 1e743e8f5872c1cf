"""Which toy products match a toy search query: the truth the toy search logs are drawn from.

`product_matches` decides the generator's clicks (`search_log_generator.py`); evaluate-search reads
`click_ceiling_scores` (the best AUC a model can reach, with and without the image) and
`attribute_agreement` (which attribute decides an impression) from the same truth. Both return
None for real logs, whose sessions carry no query attributes.
"""

import types

import numpy as np

from fashionbert_tf.configs import toy_search_attributes
from fashionbert_tf.data.toy import fashion_gen

# Garment families: a word that matches several toy garment types.
FAMILY_WORDS = {"mini_skirt": "skirt", "midi_skirt": "skirt", "short_dress": "dress",
                "long_dress": "dress", "coat": "outerwear", "bomber": "jacket",
                "tshirt": "top", "tank": "top", "shirt": "top"}
DETAILS = ("pocket", "buttons", "belt")
OPTIONAL_ATTRIBUTES = ("colour", "pattern", "sleeve", "neckline", "detail")
# Every attribute a toy query can name (the garment always).
QUERY_ATTRIBUTES = ("garment",) + OPTIONAL_ATTRIBUTES


def garment_matches(product, garment_word):
  return garment_word in (fashion_gen.GARMENT_WORDS[product.shape],
                          FAMILY_WORDS.get(product.shape))


def product_matches(product, query_attributes):
  """True when `product` has every attribute `query_attributes` names."""
  checks = {
      "garment": lambda value: garment_matches(product, value),
      "colour": lambda value: product.colour == value,
      "pattern": lambda value: product.pattern == value,
      "sleeve": lambda value: product.sleeve == value,
      "neckline": lambda value: product.neckline == value,
      "detail": lambda value: bool(getattr(product, value)),
  }
  return all(checks[name](value) for name, value in query_attributes.items())


def title_part(query_attributes, shown=toy_search_attributes.TITLE_ATTRIBUTES):
  """The attributes of a query that a toy title can show (`shown`:
  `toy_search_attributes.title_attributes(...)`)."""
  return {k: v for k, v in query_attributes.items() if k in shown}


def _product_from_attributes(attributes):
  """A `product_matches`-able view of a catalogue record's `attributes` (product_attributes)."""
  product = types.SimpleNamespace(shape=attributes["shape"], colour=attributes["colour"],
                                  pattern=attributes["pattern"], sleeve=attributes["sleeve"],
                                  neckline=attributes["neckline"])
  for detail in DETAILS:
    setattr(product, detail, detail in attributes["details"])
  return product


def _attributes_by_product(sessions, catalogue):
  """{product_id: attributes} of the catalogue, or None when a session lacks query attributes or
  an impression's product lacks attributes (real logs)."""
  products = {p.product_id: p.attributes for p in catalogue}
  if any(s.query_attributes is None for s in sessions) or any(
      products.get(i.product_id) is None for s in sessions for i in s.impressions):
    return None
  return products


def click_ceiling_scores(sessions, catalogue, title_shows_colour=True):
  """Scores of every impression of `sessions` (impression_examples order) from the generator's
  truth, or None when the logs lack attributes (real logs).

  Returns:
    dict of float32 [N]: "all_attributes" = the impression's true click probability (match /
    partial / other rate class: the best any model can rank); "title_attributes" = the same
    classes judged on what the title shows (garment, colour, pattern; no colour when not
    `title_shows_colour`): the best a model reading only the query and the title can rank, since
    sleeve, neckline and details (and then colour) are in the image only.
  Their AUCs bound Table 4 on toy logs: the image can add at most their difference.
  """
  products = _attributes_by_product(sessions, catalogue)
  if products is None:
    return None
  full, title = [], []
  for session in sessions:
    asked = session.query_attributes
    shown = title_part(asked, toy_search_attributes.title_attributes(title_shows_colour))
    for impression in session.impressions:
      product = _product_from_attributes(products[impression.product_id])
      garment = garment_matches(product, asked["garment"])
      full.append(2 if product_matches(product, asked) else int(garment))
      title.append(2 if product_matches(product, shown) else int(garment))
  return {"all_attributes": np.asarray(full, np.float32),
          "title_attributes": np.asarray(title, np.float32)}


def attribute_agreement(sessions, catalogue):
  """Which query attribute decides each impression, from the generator's truth; None for real
  logs (no attributes). What `evaluate-search` reads to tell which attributes a click model ranks
  by (`search/click_evaluation.py`, `attribute_use_auc`).

  Returns:
    dict attribute name -> (deciding bool [N], agrees bool [N]) over the impressions of
    `sessions` (impression_examples order): `deciding` marks the impressions whose query names the
    attribute and whose product agrees with every other attribute the query names (the attribute
    alone decides whether the product matches), `agrees` whether the product has it. Attributes
    no query names are left out.
  """
  products = _attributes_by_product(sessions, catalogue)
  if products is None:
    return None
  deciding = {name: [] for name in QUERY_ATTRIBUTES}
  agrees = {name: [] for name in QUERY_ATTRIBUTES}
  for session in sessions:
    asked = session.query_attributes
    for impression in session.impressions:
      product = _product_from_attributes(products[impression.product_id])
      agreement = {name: product_matches(product, {name: value}) for name, value in asked.items()}
      for name in QUERY_ATTRIBUTES:
        others_agree = all(agreement[other] for other in agreement if other != name)
        deciding[name].append(name in asked and others_agree)
        agrees[name].append(agreement.get(name, False))
  return {name: (np.asarray(deciding[name]), np.asarray(agrees[name]))
          for name in QUERY_ATTRIBUTES if any(deciding[name])}
