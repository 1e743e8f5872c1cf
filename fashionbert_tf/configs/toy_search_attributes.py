"""The attributes a toy search query names: what a toy product's title shows, what only its image
shows (the toy search logs' vocabulary, which `search.toy_image_attributes` is checked against)."""

# What a toy title shows (product_title) and what only the image shows; with
# title_shows_colour=False the colour moves from the first to the second.
TITLE_ATTRIBUTES = ("garment", "colour", "pattern")

IMAGE_ATTRIBUTES = ("sleeve", "neckline", "detail")


def title_attributes(title_shows_colour=True):
  """The query attributes a toy title shows."""
  return tuple(a for a in TITLE_ATTRIBUTES if title_shows_colour or a != "colour")


def image_only_attributes(title_shows_colour=True):
  """The attributes only the image shows (what `image_attributes` may name)."""
  return IMAGE_ATTRIBUTES if title_shows_colour else ("colour",) + IMAGE_ATTRIBUTES


def check_image_attributes(image_attributes, title_shows_colour=True):
  """Raises ValueError naming the attributes of `image_attributes` a toy title shows or that do
  not exist."""
  allowed = image_only_attributes(title_shows_colour)
  unknown = sorted(set(image_attributes) - set(allowed))
  if unknown:
    raise ValueError(f"unknown {unknown}; expected any of {list(allowed)}" + (
        " (colour only when titles leave it out)" if "colour" in unknown else ""))
