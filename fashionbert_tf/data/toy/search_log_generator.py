"""Seeded synthetic search logs for the toy Fashion-Gen products (paper 3.4; format: search_logs.py).

The toy products are regenerated from the toy generator's own seeds (`toy_catalogue_products`), so
every query, impression and click is consistent with what the drawn images and descriptions show.

Queries are attribute subsets of a real product, typed the way shoppers type them:
"red striped shirt", "long sleeve navy hoodie", "midi skirt", "v-neck dress with belt". A query
always names a garment (its exact type, e.g. "midi skirt", or with `family_word_rate` its family,
e.g. "skirt" for mini and midi skirts) and adds 0-3 more of: colour, pattern ("striped",
"pinstripe", "polka dot", "check", "plain"), sleeve length, neckline, one detail ("with pocket",
"with buttons", "with belt"). A product matches a query when it has every attribute the query
names (`product_matches`).

Impressions (what the engine showed, `impressions_per_query` per session, shuffled): some products
that match the query, some of the same garment that do not (partial matches: what a text engine
returns for the garment word), the rest random catalogue products. Clicks are independent
Bernoulli draws (no position bias, a choice): P(click) = `click_rate_match` for a matching product,
`click_rate_partial` for a partial match, `click_rate_other` otherwise: likely on a match, rare
otherwise, and noisy both ways.

Titles (what `title` holds) are "<brand> <name>", e.g. "Nordic Pixel Navy Striped Hoodie": colour,
pattern and garment type, like real product titles, but not sleeve length, neckline or details,
which only the image (and the long description, not used in search) shows. That is where the image
can help the click model (Table 4: FashionBERT vs the text-only oriBERT). With the defaults few
clicks depend on it (most queries name only what the title shows); `image_attribute_rate`,
`image_attributes`, `title_match_partial_rate` and `max_partial_impressions` draw logs the image
decides: queries name a sleeve / neckline / detail and partial impressions agree with the query on
everything the title shows (data/README.md, "Search logs": their AUC ceilings). With
`title_shows_colour=False` titles leave the colour out too ("Nordic Pixel Striped Hoodie"), and the
colour becomes an image-only attribute `image_attributes` may name: the one attribute the toy
pretraining aligns between text and image (docs/experiments/table4_investigation.md).
"""

import dataclasses
import json
import os

import numpy as np

from fashionbert_tf.configs import toy_search_attributes
from fashionbert_tf.data import search_logs
from fashionbert_tf.data.toy import fashion_gen
from fashionbert_tf.data.toy import search_relevance

# How shoppers write each pattern.
PATTERN_WORDS = {"solid": "plain", "horizontal stripes": "striped",
                 "vertical stripes": "pinstripe", "polka dots": "polka dot", "checks": "check"}
NECKLINE_WORDS = {"crewneck": "crewneck", "v-neck": "v-neck", "scoop neck": "scoop neck",
                  "drawstring hood": "hooded", "spread collar": "collared",
                  "notched lapel": "lapel", "rib knit collar": "collared"}
# info.json's "generator" for logs this module writes: how the search task recognises toy logs,
# so it keeps the name logs already on disk carry.
GENERATOR = "fashionbert_tf.data.toy_search_logs"


@dataclasses.dataclass
class ToySearchLogSettings:
  """How the toy logs are drawn (see the module docstring)."""
  num_sessions: int = 3000
  impressions_per_query: int = 10
  # Per session: shown products that match the query (drawn in [1, max]), partial matches (same
  # garment) up to this many, the rest random.
  max_matching_impressions: int = 4
  max_partial_impressions: int = 4
  click_rate_match: float = 0.6
  click_rate_partial: float = 0.08
  click_rate_other: float = 0.02
  # Probability of 0, 1, 2, 3 extra attributes besides the garment.
  extra_attribute_probabilities: tuple = (0.15, 0.4, 0.3, 0.15)
  family_word_rate: float = 0.25
  # Image-deciding logs (0, 0 = the original logs, drawn the same): the probability that a query
  # whose target has one names at least one attribute only the image shows (sleeve, neckline,
  # detail; added when the draw above named none), and the probability that a partial impression
  # is a title-level match (a product with every attribute the query names that its title shows,
  # garment / colour / pattern, but not the rest): only the image tells it from a match.
  image_attribute_rate: float = 0.0
  title_match_partial_rate: float = 0.0
  # Which image-only attributes `image_attribute_rate` draws from (a subset of
  # toy_search_attributes.IMAGE_ATTRIBUTES, plus "colour" when titles leave it out).
  image_attributes: tuple = toy_search_attributes.IMAGE_ATTRIBUTES
  # Titles name the colour ("Nordic Pixel Navy Striped Hoodie") or not ("... Striped Hoodie").
  title_shows_colour: bool = True
  test_fraction: float = 0.2
  seed: int = 0


def product_title(product, shows_colour=True):
  """The toy product's title: "<brand> <name>" (no sleeve, neckline or details; no colour when
  not `shows_colour`)."""
  return f"{product.brand} {fashion_gen.product_name(product, with_colour=shows_colour)}"


def product_attributes(product):
  """The product's searchable attributes as a JSON-able dict."""
  return {"shape": product.shape, "garment": fashion_gen.GARMENT_WORDS[product.shape],
          "family": search_relevance.FAMILY_WORDS.get(product.shape, ""),
          "colour": product.colour,
          "pattern": product.pattern, "sleeve": product.sleeve, "neckline": product.neckline,
          "details": [d for d in search_relevance.DETAILS if getattr(product, d)]}


def query_text(attributes):
  """Shopper wording of a query: "[sleeve] [colour] [pattern] [neckline] garment [with detail]"."""
  words = []
  if "sleeve" in attributes:
    words.append(attributes["sleeve"])
  if "colour" in attributes:
    words.append(attributes["colour"])
  if "pattern" in attributes:
    words.append(PATTERN_WORDS[attributes["pattern"]])
  if "neckline" in attributes:
    words.append(NECKLINE_WORDS[attributes["neckline"]])
  words.append(attributes["garment"])
  if "detail" in attributes:
    words.append(f"with {attributes['detail']}")
  return " ".join(words)


def _image_tells(shape, name, value):
  """False when the garment type alone implies the attribute (every shirt has a collar and
  buttons, every tank top is sleeveless): naming it then adds nothing the title lacks."""
  if name == "colour":
    return True
  if name == "sleeve":
    return shape in fashion_gen.HAS_SLEEVES
  if name == "neckline":
    return len(fashion_gen.NECKLINES.get(shape, ())) > 1
  return not (value == "buttons" and shape in ("shirt", "coat"))


def draw_query(product, rng, settings):
  """Attributes of a query `product` matches: its garment plus 0-3 of its other attributes."""
  use_family = (product.shape in search_relevance.FAMILY_WORDS and
                rng.random() < settings.family_word_rate)
  attributes = {"garment": search_relevance.FAMILY_WORDS[product.shape] if use_family else
                fashion_gen.GARMENT_WORDS[product.shape]}
  available = {"colour": product.colour, "pattern": product.pattern}
  if product.sleeve:
    available["sleeve"] = product.sleeve
  if product.neckline:
    available["neckline"] = product.neckline
  details = [d for d in search_relevance.DETAILS if getattr(product, d)]
  if details:
    available["detail"] = str(rng.choice(details))
  probabilities = np.asarray(settings.extra_attribute_probabilities, float)
  count = min(int(rng.choice(len(probabilities), p=probabilities / probabilities.sum())),
              len(available))
  names = [n for n in search_relevance.OPTIONAL_ATTRIBUTES if n in available]
  for name in rng.choice(names, size=count, replace=False):
    attributes[str(name)] = available[str(name)]
  image_only = [n for n in settings.image_attributes
                if n in available and _image_tells(product.shape, n, available[n])]
  if (settings.image_attribute_rate > 0 and image_only and
      not any(n in attributes for n in settings.image_attributes) and
      rng.random() < settings.image_attribute_rate):
    name = str(rng.choice(image_only))
    attributes[name] = available[name]
  return attributes


def toy_catalogue_products(num_train_products, num_validation_products, toy_seed, splits,
                           num_empty_descriptions=2):
  """The toy products of `splits` ("train", "validation" or "both") with a non-empty description.

  Regenerated exactly as `fashion_gen.make_toy_fashiongen` makes them (same seeds and
  `num_empty_descriptions`, its default 2 as in the demo; those products are absent from the
  TFRecords and left out here).
  """
  if splits not in ("train", "validation", "both"):
    raise ValueError(f"toy catalogue splits {splits!r}: expected train, validation or both")
  products = []
  if splits in ("train", "both"):
    products += fashion_gen.make_products(num_train_products, toy_seed,
                                             first_product_id=100000,
                                             num_empty_descriptions=num_empty_descriptions)
  if splits in ("validation", "both"):
    products += fashion_gen.make_products(num_validation_products, toy_seed + 1,
                                             first_product_id=900000)
  return [p for p in products if p.dirt != "empty"]


def _pick(rng, pool, count, exclude):
  pool = [p for p in pool if p.product_id not in exclude]
  count = min(count, len(pool))
  if count <= 0:
    return []
  return [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]


def make_sessions(products, settings):
  """Draws `settings.num_sessions` sessions over `products`; returns a list of `SearchSession`."""
  if len(products) < settings.impressions_per_query:
    raise ValueError(f"{len(products)} catalogue products; need at least "
                     f"impressions_per_query={settings.impressions_per_query}")
  toy_search_attributes.check_image_attributes(settings.image_attributes,
                                               settings.title_shows_colour)
  shown_in_title = toy_search_attributes.title_attributes(settings.title_shows_colour)
  rng = np.random.default_rng(settings.seed)
  sessions = []
  for index in range(settings.num_sessions):
    target = products[int(rng.integers(len(products)))]
    attributes = draw_query(target, rng, settings)
    matching = [p for p in products if search_relevance.product_matches(p, attributes)]
    partial = [p for p in products if search_relevance.garment_matches(p, attributes["garment"]) and
               not search_relevance.product_matches(p, attributes)]
    shown = _pick(rng, matching, int(rng.integers(1, settings.max_matching_impressions + 1)),
                  set())
    ids = {p.product_id for p in shown}
    num_partial = int(rng.integers(0, settings.max_partial_impressions + 1))
    if settings.title_match_partial_rate > 0:
      title_level = [p for p in partial
                     if search_relevance.product_matches(
                         p, search_relevance.title_part(attributes, shown_in_title))]
      picked = _pick(rng, title_level,
                     int(rng.binomial(num_partial, settings.title_match_partial_rate)), ids)
      shown += picked
      num_partial -= len(picked)
      ids |= {p.product_id for p in picked}
    shown += _pick(rng, partial, num_partial, ids)
    ids = {p.product_id for p in shown}
    shown += _pick(rng, products, settings.impressions_per_query - len(shown), ids)
    shown = [shown[i] for i in rng.permutation(len(shown))]
    impressions = []
    for product in shown:
      if search_relevance.product_matches(product, attributes):
        rate = settings.click_rate_match
      elif search_relevance.garment_matches(product, attributes["garment"]):
        rate = settings.click_rate_partial
      else:
        rate = settings.click_rate_other
      impressions.append(search_logs.Impression(
          product.product_id, product_title(product, settings.title_shows_colour),
          int(rng.random() < rate)))
    sessions.append(search_logs.SearchSession(
        f"q{index:06d}", query_text(attributes), tuple(impressions), attributes))
  return sessions


def click_rates(sessions, products):
  """Observed click rate of matching vs non-matching impressions: {"match": r, "other": r, ...}."""
  by_id = {p.product_id: p for p in products}
  counts = {"match": [0, 0], "other": [0, 0]}
  for session in sessions:
    for impression in session.impressions:
      kind = ("match" if search_relevance.product_matches(by_id[impression.product_id],
                                                          session.query_attributes) else "other")
      counts[kind][0] += impression.clicked
      counts[kind][1] += 1
  return {f"click_rate_{kind}": clicks / max(shown, 1) for kind, (clicks, shown) in counts.items()}


def write_toy_search_logs(logs_dir, products, settings):
  """Writes catalogue.jsonl, train.jsonl, test.jsonl and info.json to `logs_dir`.

  Returns:
    The info dict (settings, counts, observed click rates) also written to info.json.
  """
  sessions = make_sessions(products, settings)
  train, test = search_logs.split_by_query(sessions, settings.test_fraction, settings.seed + 1)
  search_logs.write_json_lines(
      os.path.join(logs_dir, search_logs.CATALOGUE_FILE),
      [search_logs.catalogue_record(search_logs.CatalogueProduct(
          p.product_id, product_title(p, settings.title_shows_colour), product_attributes(p)))
       for p in products])
  for split, split_sessions in (("train", train), ("test", test)):
    search_logs.write_json_lines(os.path.join(logs_dir, search_logs.SPLIT_FILES[split]),
                                 [search_logs.session_record(s) for s in split_sessions])
  info = {
      "generator": GENERATOR,
      "settings": dataclasses.asdict(settings),
      "num_catalogue_products": len(products),
      "splits": {split: {"sessions": len(s), "distinct_queries":
                         len({search_logs.normalize_query(x.query) for x in s}),
                         "impressions": sum(len(x.impressions) for x in s),
                         "clicks": sum(i.clicked for x in s for i in x.impressions),
                         **click_rates(s, products)}
                 for split, s in (("train", train), ("test", test))},
  }
  with open(os.path.join(logs_dir, search_logs.INFO_FILE), "w", encoding="utf-8") as handle:
    json.dump(info, handle, indent=2, sort_keys=True)
  return info


