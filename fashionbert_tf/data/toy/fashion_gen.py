"""Toy Fashion-Gen: a small, seeded dataset in Fashion-Gen's own HDF5 schema, offline.

Every product is a drawn garment (numpy + PIL) whose fine-grained attributes are stated in its
description, so that matching text and image needs the details (the paper's motivation, section 1):
  - silhouette by subcategory (t-shirt, shirt, sweater, hoodie, dress, skirt, trousers, shorts, ...),
  - main colour and a second colour, pattern (solid, horizontal / vertical stripes, dots, checks),
  - sleeve length (sleeveless / short / long), neckline (crew, v-neck, collar, hood),
  - details such as a chest pocket, buttons, a belt.
Each product has 1-6 poses (Fashion-Gen: 1 to 6 angles): the same garment drawn with a different
offset, scale, background shade and, for the "back" pose, without front details.

Descriptions mimic real Fashion-Gen text, including its dirt: some have HTML markup (`<br>`,
`<p>`), HTML entities (`&amp;`, `&nbsp;`), cp1252 / latin-1 bytes instead of UTF-8 and stray
whitespace; a few (`num_empty_descriptions`) are empty, to exercise the reader's skip-and-count.
Strings are stored as fixed-length bytes [N, 1], like the real files.
"""

import dataclasses
import os

import h5py
import numpy as np
from PIL import Image
from PIL import ImageDraw

IMAGE_SIZE = 256

COLOURS = {
    "black": (25, 25, 28), "white": (245, 245, 240), "navy": (20, 35, 90),
    "red": (200, 30, 35), "green": (40, 130, 60), "yellow": (235, 200, 40),
    "pink": (240, 150, 180), "grey": (130, 130, 135), "beige": (215, 195, 160),
    "brown": (110, 70, 40), "orange": (240, 130, 30), "purple": (120, 60, 150),
    "sky blue": (120, 180, 230), "burgundy": (120, 20, 45),
}
PATTERNS = ("solid", "horizontal stripes", "vertical stripes", "polka dots", "checks")

# category -> subcategory -> garment shape drawn. Upper case as in Fashion-Gen.
CATALOGUE = {
    "TOPS": {"T-SHIRTS": "tshirt", "SHIRTS": "shirt", "TANK TOPS": "tank"},
    "SWEATERS": {"CREWNECKS": "sweater", "HOODIES & ZIPUPS": "hoodie"},
    "DRESSES": {"SHORT DRESSES": "short_dress", "LONG DRESSES": "long_dress"},
    "SKIRTS": {"MINI SKIRTS": "mini_skirt", "MIDI SKIRTS": "midi_skirt"},
    "PANTS": {"TROUSERS": "trousers", "SHORTS": "shorts"},
    "JACKETS & COATS": {"COATS": "coat", "BOMBERS": "bomber"},
}
HAS_SLEEVES = {"tshirt", "shirt", "sweater", "hoodie", "short_dress", "long_dress", "coat",
               "bomber"}
NECKLINES = {"tshirt": ("crewneck", "v-neck"), "shirt": ("spread collar",),
             "tank": ("scoop neck", "v-neck"), "sweater": ("crewneck",),
             "hoodie": ("drawstring hood",), "short_dress": ("crewneck", "v-neck"),
             "long_dress": ("crewneck", "v-neck"), "coat": ("notched lapel",),
             "bomber": ("rib knit collar",)}
GARMENT_WORDS = {"tshirt": "t-shirt", "shirt": "shirt", "tank": "tank top",
                 "sweater": "sweater", "hoodie": "hoodie", "short_dress": "short dress",
                 "long_dress": "long dress", "mini_skirt": "mini skirt",
                 "midi_skirt": "midi skirt", "trousers": "trousers", "shorts": "shorts",
                 "coat": "coat", "bomber": "bomber jacket"}
MATERIALS = ("cotton jersey", "stretch cotton", "wool", "linen", "silk", "denim", "nylon",
             "cashmere", "viscose crepe", "organic cotton")
FILLER = (
    "Tonal stitching.", "Relaxed fit.", "Slim fit.", "Logo patch at back.",
    "Made in Italy.", "Made in Portugal.", "Dropped shoulders.", "Ribbed hem.",
    "Unlined.", "Fully lined.", "Raw edge at hem.", "Signature embroidery at front.",
    "Vented side seams.", "Concealed zip closure.", "Machine wash cold.",
)
BRANDS = ("Maison Toy", "Atelier Synth", "Nordic Pixel", "Studio Numpy", "Casa Seed",
          "Gen Label", "Comme des Arrays")
SEASONS = ("SS17", "FW17", "SS18", "FW18")
POSES = ("id_gridfs_1", "id_gridfs_2", "id_gridfs_3", "id_gridfs_4", "id_gridfs_5",
         "id_gridfs_6")

# Fixed byte widths of the string datasets, as in the real files (longer values are cut).
STRING_WIDTHS = {
    "input_description": 800, "input_concat_description": 900, "input_name": 80,
    "input_category": 32, "input_subcategory": 32, "input_pose": 16, "input_gender": 8,
    "input_composition": 64, "input_department": 16, "input_season": 8, "input_brand": 32,
}


@dataclasses.dataclass
class Product:
  product_id: int
  category: str
  subcategory: str
  shape: str
  colour: str
  second_colour: str
  pattern: str
  sleeve: str        # "sleeveless" | "short sleeve" | "long sleeve" | "" (no sleeves)
  neckline: str      # "" for bottoms
  pocket: bool
  buttons: bool
  belt: bool
  material: str
  brand: str
  gender: str
  season: str
  price: float
  num_poses: int
  fillers: tuple
  dirt: str          # "clean" | "markup" | "entities" | "cp1252" | "latin1" | "spaces" | "empty"


def _random_product(rng, product_id, dirt):
  category = rng.choice(sorted(CATALOGUE))
  subcategory = rng.choice(sorted(CATALOGUE[category]))
  shape = CATALOGUE[category][subcategory]
  colour, second_colour = rng.choice(sorted(COLOURS), size=2, replace=False)
  sleeve = ""
  if shape in HAS_SLEEVES:
    sleeve = rng.choice(["short sleeve", "long sleeve"] + (
        ["sleeveless"] if shape in ("short_dress", "long_dress") else []))
  elif shape == "tank":
    sleeve = "sleeveless"
  return Product(
      product_id=product_id, category=category, subcategory=subcategory, shape=shape,
      colour=str(colour), second_colour=str(second_colour), pattern=str(rng.choice(PATTERNS)),
      sleeve=str(sleeve), neckline=str(rng.choice(NECKLINES[shape])) if shape in NECKLINES else "",
      pocket=bool(rng.random() < 0.4) and shape not in ("mini_skirt", "midi_skirt"),
      buttons=bool(rng.random() < 0.4) or shape in ("shirt", "coat"),
      belt=bool(rng.random() < 0.3) and shape in ("long_dress", "short_dress", "trousers", "coat"),
      material=str(rng.choice(MATERIALS)), brand=str(rng.choice(BRANDS)),
      gender=str(rng.choice(["WOMEN", "MEN"])), season=str(rng.choice(SEASONS)),
      price=float(rng.integers(80, 2000)), num_poses=int(rng.integers(1, 7)),
      fillers=tuple(rng.choice(FILLER, size=int(rng.integers(0, 4)), replace=False)),
      dirt=dirt)


def _pattern_phrase(product):
  if product.pattern == "solid":
    return f"in {product.colour}"
  return f"in {product.colour} with {product.second_colour} {product.pattern}"


def describe(product):
  """The clean English description (attributes stated), before dirt is added."""
  garment = GARMENT_WORDS[product.shape]
  sentences = []
  head = f"{product.sleeve} {product.material} {garment}" if product.sleeve else (
      f"{product.material} {garment}")
  sentences.append(f"{head[0].upper()}{head[1:]} {_pattern_phrase(product)}.")
  if product.neckline:
    sentences.append(f"{product.neckline[0].upper()}{product.neckline[1:]}.")
  details = []
  if product.pocket:
    details.append(f"patch pocket at chest in {product.second_colour}")
  if product.buttons:
    details.append("button closure at front")
  if product.belt:
    details.append(f"{product.second_colour} belt at waist")
  if details:
    sentences.append(f"{details[0][0].upper()}{details[0][1:]}" +
                     "".join(f", {d}" for d in details[1:]) + ".")
  sentences.extend(product.fillers)
  return " ".join(sentences)


def product_name(product, with_colour=True):
  """"Navy Striped Hoodie" ("Striped Hoodie" without the colour)."""
  pattern = {"solid": "", "horizontal stripes": "Striped ", "vertical stripes": "Pinstripe ",
             "polka dots": "Dotted ", "checks": "Check "}[product.pattern]
  colour = f"{product.colour.title()} " if with_colour else ""
  return f"{colour}{pattern}{GARMENT_WORDS[product.shape].title()}"


def dirty_bytes(text, dirt):
  """Encodes a clean description the way messy Fashion-Gen rows look (see module docstring)."""
  if dirt == "empty":
    return b"   "
  if dirt == "markup":
    return ("<p>" + text.replace(". ", ".<br>", 1) + "</p>").encode("utf-8")
  if dirt == "entities":
    return text.replace(" and ", " &amp; ").replace(". ", ".&nbsp; ", 1).encode("utf-8")
  if dirt == "cp1252":
    return (text + " \u2013 Designer colour \u201ccaf\u00e9\u201d.").encode("cp1252")
  if dirt == "latin1":
    return (text + " Caf\u00e9 cr\u00e8me trim.").encode("latin-1")
  if dirt == "spaces":
    return ("  " + text.replace(" ", "  \t", 2) + " \n").encode("utf-8")
  return text.encode("utf-8")


# ---- drawing -------------------------------------------------------------------------------------

def _garment_mask(shape, sleeve, neckline):
  """Boolean [256, 256] silhouette of the garment, drawn in a canonical frame."""
  mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
  draw = ImageDraw.Draw(mask)
  top_like = shape in ("tshirt", "shirt", "tank", "sweater", "hoodie", "coat", "bomber")
  if top_like:
    bottom = 200 if shape == "coat" else 180
    draw.polygon([(88, 60), (168, 60), (172, bottom), (84, bottom)], fill=255)
  elif shape in ("short_dress", "long_dress"):
    bottom = 170 if shape == "short_dress" else 235
    draw.polygon([(96, 60), (160, 60), (164, 120), (192, bottom), (64, bottom), (92, 120)],
                 fill=255)
  elif shape in ("mini_skirt", "midi_skirt"):
    bottom = 150 if shape == "mini_skirt" else 210
    draw.polygon([(92, 80), (164, 80), (190, bottom), (66, bottom)], fill=255)
  elif shape in ("trousers", "shorts"):
    bottom = 130 if shape == "shorts" else 230
    draw.polygon([(86, 50), (170, 50), (178, bottom), (134, bottom), (128, 95), (122, 95),
                  (122, bottom), (78, bottom)], fill=255)
  if sleeve in ("short sleeve", "long sleeve"):
    if sleeve == "short sleeve":
      left = [(88, 60), (60, 70), (48, 105), (84, 110)]
      right = [(168, 60), (196, 70), (208, 105), (172, 110)]
    else:
      left = [(88, 60), (60, 70), (30, 180), (58, 186), (86, 110)]
      right = [(168, 60), (196, 70), (226, 180), (198, 186), (170, 110)]
    draw.polygon(left, fill=255)
    draw.polygon(right, fill=255)
  if shape == "hoodie" or neckline == "drawstring hood":
    draw.ellipse([104, 30, 152, 72], fill=255)
  if neckline in ("crewneck", "scoop neck"):
    radius = 12 if neckline == "crewneck" else 20
    draw.ellipse([128 - radius, 60 - radius, 128 + radius, 60 + radius], fill=0)
  elif neckline == "v-neck":
    draw.polygon([(112, 60), (144, 60), (128, 92)], fill=0)
  return np.asarray(mask) > 0


def _pattern_layer(pattern, colour, second, phase):
  """uint8 [256, 256, 3] texture: the garment's colour with its pattern in the second colour."""
  yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
  if pattern == "horizontal stripes":
    on = ((yy + phase) // 10) % 2 == 0
  elif pattern == "vertical stripes":
    on = ((xx + phase) // 10) % 2 == 0
  elif pattern == "polka dots":
    on = (((yy + phase) % 20 - 10) ** 2 + ((xx + phase) % 20 - 10) ** 2) < 16
  elif pattern == "checks":
    on = (((yy + phase) // 16) + ((xx + phase) // 16)) % 2 == 0
  else:
    on = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
  layer = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  layer[:] = colour
  layer[on] = second
  return layer


def draw_product_image(product, pose_index, rng):
  """uint8 [256, 256, 3]: the product's garment, as seen in pose `pose_index` (0-based)."""
  colour = np.array(COLOURS[product.colour], np.uint8)
  second = np.array(COLOURS[product.second_colour], np.uint8)
  background = int(235 + rng.integers(-12, 12))
  image = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), background, np.uint8)
  mask = _garment_mask(product.shape, product.sleeve, product.neckline)
  image[mask] = _pattern_layer(product.pattern, colour, second, int(rng.integers(0, 10)))[mask]
  canvas = Image.fromarray(image)
  draw = ImageDraw.Draw(canvas)
  back_view = pose_index == 1
  outline = tuple(int(c) for c in np.clip(colour.astype(int) - 60, 0, 255))
  if not back_view:
    if product.pocket:
      draw.rectangle([140, 82, 160, 102], fill=tuple(int(c) for c in second), outline=outline)
    if product.buttons:
      for y in range(80, 175, 18):
        draw.ellipse([125, y, 131, y + 6], fill=(230, 230, 230), outline=outline)
    if product.neckline in ("spread collar", "notched lapel", "rib knit collar"):
      draw.polygon([(108, 56), (128, 76), (118, 84)], fill=(250, 250, 250), outline=outline)
      draw.polygon([(148, 56), (128, 76), (138, 84)], fill=(250, 250, 250), outline=outline)
  if product.belt:
    draw.rectangle([70, 118, 186, 128], fill=tuple(int(c) for c in second))
  # Pose: a different framing of the same garment (shift + scale), as photos from other angles.
  scale = 1.0 - 0.06 * pose_index + float(rng.uniform(-0.03, 0.03))
  size = int(IMAGE_SIZE * scale)
  canvas = canvas.resize((size, size), Image.BILINEAR)
  framed = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (background,) * 3)
  offset_x = (IMAGE_SIZE - size) // 2 + int(rng.integers(-8, 9))
  offset_y = (IMAGE_SIZE - size) // 2 + int(rng.integers(-8, 9))
  framed.paste(canvas, (offset_x, offset_y))
  if pose_index >= 4:
    framed = framed.transpose(Image.FLIP_LEFT_RIGHT)
  return np.asarray(framed, np.uint8)


# ---- writing -------------------------------------------------------------------------------------

def _fixed_bytes(values, width):
  array = np.array([v[:width] for v in values], dtype=f"S{width}")
  return array.reshape(-1, 1)


def make_products(num_products, seed, first_product_id=100000, num_empty_descriptions=0,
                  dirty_fraction=0.25):
  """`num_products` random products; the first `num_empty_descriptions` have empty text."""
  rng = np.random.default_rng(seed)
  dirt_kinds = ("markup", "entities", "cp1252", "latin1", "spaces")
  products = []
  for i in range(num_products):
    if i < num_empty_descriptions:
      dirt = "empty"
    elif rng.random() < dirty_fraction:
      dirt = str(rng.choice(dirt_kinds))
    else:
      dirt = "clean"
    products.append(_random_product(rng, first_product_id + i, dirt))
  return products


def write_split(path, products, seed, chunk_size=128):
  """Writes products (all their poses) to `path` in Fashion-Gen's HDF5 schema; returns #rows."""
  rng = np.random.default_rng(seed)
  rows = [(p, pose) for p in products for pose in range(p.num_poses)]
  # Fashion-Gen rows are ordered product by product; keep that (it is what streaming sees).
  num_rows = len(rows)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp_path = path + ".tmp"
  with h5py.File(tmp_path, "w") as handle:
    images = handle.create_dataset(
        "input_image", (num_rows, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8,
        chunks=(1, IMAGE_SIZE, IMAGE_SIZE, 3))
    for start in range(0, num_rows, chunk_size):
      stop = min(start + chunk_size, num_rows)
      images[start:stop] = np.stack(
          [draw_product_image(p, pose, rng) for p, pose in rows[start:stop]])
    descriptions = [dirty_bytes(describe(p), p.dirt) for p, _ in rows]
    columns = {
        "input_description": descriptions,
        "input_concat_description": [
            (p.category.title() + " " + describe(p)).encode("utf-8") for p, _ in rows],
        "input_name": [product_name(p).encode("utf-8") for p, _ in rows],
        "input_category": [p.category.encode() for p, _ in rows],
        "input_subcategory": [p.subcategory.encode() for p, _ in rows],
        "input_pose": [POSES[pose].encode() for _, pose in rows],
        "input_gender": [p.gender.encode() for p, _ in rows],
        "input_composition": [f"100% {p.material}".encode() for p, _ in rows],
        "input_department": [b"CLOTHING" for _ in rows],
        "input_season": [p.season.encode() for p, _ in rows],
        "input_brand": [p.brand.encode() for p, _ in rows],
    }
    for name, values in columns.items():
      handle.create_dataset(name, data=_fixed_bytes(values, STRING_WIDTHS[name]))
    handle.create_dataset(
        "input_productID", data=np.array([p.product_id for p, _ in rows], np.int32)[:, None])
    handle.create_dataset(
        "input_msrpUSD", data=np.array([p.price for p, _ in rows], np.float32)[:, None])
    handle.create_dataset("index", data=np.arange(num_rows, dtype=np.int64)[:, None])
  os.replace(tmp_path, path)
  return num_rows


def make_toy_fashiongen(train_path, validation_path, num_train_products=320,
                        num_validation_products=120, seed=0, num_empty_descriptions=2):
  """Writes the toy train and validation HDF5 files.

  Train and validation hold different products (like Fashion-Gen's split). With the defaults:
  ~1,100 train and ~420 validation images, a few seconds on one core. The first
  `num_empty_descriptions` train products have an empty description (skipped and counted by
  prepare-data).

  Returns:
    {"train": (path, num_rows), "validation": (path, num_rows)}.
  """
  train_products = make_products(num_train_products, seed, first_product_id=100000,
                                 num_empty_descriptions=num_empty_descriptions)
  validation_products = make_products(num_validation_products, seed + 1,
                                      first_product_id=900000)
  result = {}
  for split, path, products, split_seed in (
      ("train", train_path, train_products, seed + 2),
      ("validation", validation_path, validation_products, seed + 3)):
    result[split] = (path, write_split(path, products, split_seed))
  return result
