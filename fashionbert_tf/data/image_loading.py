"""Any product photo to the model's 256 x 256 RGB image, by one documented policy.

The catalogue source (prepare-data on a retailer's own photos) and the Python API (`Matcher`) both
call `load_image`, so a photo scored from Python is the image the model was trained on.

Steps, in order:
  1. Open (JPEG, PNG, WebP, GIF: its first frame, BMP, TIFF...) and check it decodes to the end (a
     truncated file is an error, not a grey lower half).
  2. Apply the EXIF orientation (phone photos are stored sideways with a rotation tag).
  3. Convert to RGB: alpha (RGBA, LA, palette with transparency) is composited on white (product
     photos are shot on white; black would make every transparent cut-out a dark image); greyscale,
     CMYK and palette images are converted.
  4. Resize to `size` x `size` by `resize`:
       "pad"     (default) pad the shorter side with white to a square, centred, then resize: the
                 whole garment is kept, its aspect ratio too.
       "crop"    centre-crop the longer side to a square, then resize: no padding, the garment's
                 ends may be cut (a long dress on a tall photo).
       "stretch" resize to the square directly: everything kept, proportions distorted.
     Resizing uses Pillow's antialiased LANCZOS filter (a plain bilinear downscale of a 2,000-px photo
     aliases the fabric patterns the patches are meant to see). Two exact shortcuts for large
     photos, ~6x faster on a 2,000-px JPEG: a JPEG at least 2x / 4x / 8x the output size in both
     sides is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's `draft`: an
     averaging downscale, never below `size` a side), and a photo more than 3x the output size is
     first reduced by an integer factor by box averaging (`reducing_gap=3.0`) before LANCZOS.
"""

import io
import os

import numpy as np
from PIL import Image
from PIL import ImageOps

from fashionbert_tf.data import contract

RESIZE_POLICIES = ("pad", "crop", "stretch")
DEFAULT_RESIZE = "pad"
# Images whose shorter side is under this many pixels carry no patch detail (8 x 8 patches of
# < 4 px each) and are refused.
MIN_IMAGE_SIDE = 32
_BACKGROUND = (255, 255, 255)


class ImageLoadError(ValueError):
  """An image that cannot be read or used; the message names the image and the reason.

  Attributes:
    reason: a short machine-readable cause, one of "missing_file", "undecodable", "truncated",
      "too_small", "bad_array", "bad_type" (the catalogue source counts skipped rows by it).
  """

  def __init__(self, message, reason):
    super().__init__(message)
    self.reason = reason


def check_resize_policy(resize):
  """Raises ValueError naming the allowed values unless `resize` is one of `RESIZE_POLICIES`."""
  if resize not in RESIZE_POLICIES:
    raise ValueError(f"image resize policy {resize!r}; expected one of {RESIZE_POLICIES}")
  return resize


def _describe(source):
  if isinstance(source, (str, os.PathLike)):
    return os.fspath(source)
  if isinstance(source, (bytes, bytearray)):
    return f"<{len(source)} bytes>"
  if isinstance(source, Image.Image):
    return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
  if isinstance(source, np.ndarray):
    return f"<array {source.dtype} {list(source.shape)}>"
  return f"<{type(source).__name__}>"


def _open(source, name, draft_size=None):
  """A fully decoded `PIL.Image` from a path, encoded bytes, a PIL image or a uint8 array; a JPEG
  is decoded at the smallest DCT scale that keeps both sides >= `draft_size` (when given)."""
  if isinstance(source, Image.Image):
    return source
  if isinstance(source, np.ndarray):
    if source.dtype != np.uint8:
      raise ImageLoadError(f"image {name}: expected a uint8 array, got {source.dtype}", "bad_array")
    if source.ndim == 2 or (source.ndim == 3 and source.shape[-1] in (1, 3, 4)):
      array = source[..., 0] if source.ndim == 3 and source.shape[-1] == 1 else source
      return Image.fromarray(np.ascontiguousarray(array))
    raise ImageLoadError(
        f"image {name}: expected an array of shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]",
        "bad_array")
  if isinstance(source, (str, os.PathLike)):
    if not os.path.isfile(source):
      raise ImageLoadError(f"image file not found: {name}", "missing_file")
    with open(source, "rb") as f:
      data = f.read()
  elif isinstance(source, (bytes, bytearray)):
    data = bytes(source)
  else:
    raise ImageLoadError(
        f"image {name}: expected a file path, encoded bytes, a PIL image or a uint8 array",
        "bad_type")
  try:
    image = Image.open(io.BytesIO(data))
    image.seek(0)   # animated GIF / WebP: the first frame
    if draft_size and image.format == "JPEG":
      image.draft(None, (draft_size, draft_size))
    image.load()
  except OSError as e:
    reason = "truncated" if "truncated" in str(e).lower() else "undecodable"
    raise ImageLoadError(f"image {name}: cannot decode ({e})", reason) from e
  except (Image.DecompressionBombError, ValueError, SyntaxError) as e:
    raise ImageLoadError(f"image {name}: cannot decode ({e})", "undecodable") from e
  return image


def _to_rgb(image):
  """RGB with any alpha composited on white; greyscale / CMYK / palette / 16-bit converted."""
  if image.mode == "P":
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")
  if image.mode in ("I;16", "I;16B", "I;16L", "I"):
    array = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if array.max() > 255 else 255.0
    image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
  return image.convert("RGB")


def _to_square(image, resize):
  width, height = image.size
  if resize == "stretch" or width == height:
    return image
  side = min(width, height) if resize == "crop" else max(width, height)
  if resize == "crop":
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))
  canvas = Image.new("RGB", (side, side), _BACKGROUND)
  canvas.paste(image, ((side - width) // 2, (side - height) // 2))
  return canvas


def load_image(source, resize=DEFAULT_RESIZE, size=contract.IMAGE_SIZE, min_side=MIN_IMAGE_SIDE):
  """One product photo as the model's input image.

  Args:
    source: a file path (str / os.PathLike), encoded image bytes, a `PIL.Image.Image`, or a uint8
      array [H, W], [H, W, 1], [H, W, 3] (RGB) or [H, W, 4] (RGBA), of any size.
    resize: "pad", "crop" or "stretch" (module docstring).
    size: side of the output square (the model's 256).
    min_side: images whose shorter side (after the EXIF rotation) is below this are refused.

  Returns:
    uint8 array [size, size, 3], RGB.

  Raises:
    ImageLoadError: the image is missing, cannot be decoded, is truncated, is too small, or
      `source` is of an unsupported type; the message names it and `reason` says why.
    ValueError: `resize` is not a known policy.
  """
  check_resize_policy(resize)
  name = _describe(source)
  image = _open(source, name, draft_size=size)
  try:
    image = ImageOps.exif_transpose(image)
  except (OSError, ValueError, SyntaxError):   # a corrupt EXIF block: keep the stored orientation
    pass
  width, height = image.size
  if min(width, height) < min_side:
    raise ImageLoadError(
        f"image {name}: {width}x{height} pixels, under the {min_side}-pixel minimum side",
        "too_small")
  image = _to_square(_to_rgb(image), resize)
  if image.size != (size, size):
    image = image.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
  return np.asarray(image, dtype=np.uint8)
