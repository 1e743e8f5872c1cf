"""load_image: real files in every common format and mode to the model's 256 x 256 RGB."""

import numpy as np
import pytest
from PIL import Image

from fashionbert_tf.data import image_loading

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _halves(width, height, left=RED, right=BLUE, mode="RGB"):
  """An image whose left half is `left` and right half `right`."""
  array = np.zeros([height, width, 3], np.uint8)
  array[:, : width // 2] = left
  array[:, width // 2:] = right
  return Image.fromarray(array).convert(mode)


def _near(pixel, colour, tol=40):
  return np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tol)


def test_exif_orientation_is_applied(tmp_path):
  path = tmp_path / "rotated.jpg"
  exif = Image.Exif()
  exif[0x0112] = 6   # stored sideways: displayed rotated 90 degrees clockwise
  _halves(128, 64).save(path, exif=exif, quality=95)
  image = image_loading.load_image(path, resize="stretch")
  assert image.shape == (256, 256, 3) and image.dtype == np.uint8
  # Displayed upright, the stored left (red) half is on top and the right (blue) half below.
  assert _near(image[20, 128], RED) and _near(image[236, 128], BLUE)
  # Without the tag the same pixels stay left / right.
  plain = tmp_path / "plain.jpg"
  _halves(128, 64).save(plain, quality=95)
  unrotated = image_loading.load_image(plain, resize="stretch")
  assert _near(unrotated[128, 20], RED) and _near(unrotated[128, 236], BLUE)


@pytest.mark.parametrize("mode,suffix", [("CMYK", "jpg"), ("L", "png"), ("P", "gif"),
                                         ("RGB", "webp"), ("LA", "png"), ("I;16", "png")])
def test_modes_and_formats_become_rgb(tmp_path, mode, suffix):
  path = tmp_path / f"image.{suffix}"
  source = _halves(96, 96)
  if mode == "I;16":
    source = Image.fromarray((np.asarray(source.convert("L"), np.uint16) * 257))
  else:
    source = source.convert(mode)
  source.save(path)
  image = image_loading.load_image(path)
  assert image.shape == (256, 256, 3)
  reference = np.asarray(_halves(96, 96).convert("L" if mode in ("L", "LA", "I;16") else "RGB")
                         .convert("RGB").resize((256, 256)), np.int32)
  assert np.abs(image.astype(np.int32) - reference).mean() < 12


def test_alpha_is_composited_on_white(tmp_path):
  array = np.zeros([64, 64, 4], np.uint8)
  array[:, :32] = (255, 0, 0, 255)   # opaque red left, fully transparent right
  path = tmp_path / "cutout.png"
  Image.fromarray(array, "RGBA").save(path)
  image = image_loading.load_image(path)
  assert _near(image[128, 20], RED, tol=5) and _near(image[128, 236], WHITE, tol=5)
  # A palette GIF with a transparent index too.
  gif = tmp_path / "cutout.gif"
  Image.fromarray(array, "RGBA").save(gif, transparency=0)
  assert _near(image_loading.load_image(gif)[128, 236], WHITE, tol=5)


def test_resize_policies_on_a_tall_image():
  tall = np.zeros([400, 100, 3], np.uint8)   # black garment filling a tall photo
  padded = image_loading.load_image(tall, resize="pad")
  cropped = image_loading.load_image(tall, resize="crop")
  stretched = image_loading.load_image(tall, resize="stretch")
  # pad: white bars left and right, the garment's whole height kept in the middle.
  assert _near(padded[128, 5], WHITE, 5) and _near(padded[5, 128], (0, 0, 0), 5)
  # crop and stretch: no padding anywhere.
  assert cropped.max() < 5 and stretched.max() < 5
  with pytest.raises(ValueError, match="resize policy 'squash'"):
    image_loading.load_image(tall, resize="squash")


def test_inputs_as_path_bytes_pil_and_array_agree(tmp_path):
  source = _halves(300, 200)
  path = tmp_path / "a.png"
  source.save(path)
  from_path = image_loading.load_image(str(path))
  assert np.array_equal(from_path, image_loading.load_image(path.read_bytes()))
  assert np.array_equal(from_path, image_loading.load_image(source))
  assert np.array_equal(from_path, image_loading.load_image(np.asarray(source)))


@pytest.mark.parametrize("case,reason", [("missing", "missing_file"), ("text", "undecodable"),
                                         ("truncated", "truncated"), ("small", "too_small")])
def test_bad_images_are_named_with_a_reason(tmp_path, case, reason):
  path = tmp_path / "bad.jpg"
  if case == "text":
    path.write_text("not an image, only named like one\n")
  elif case == "truncated":
    _halves(256, 256).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
  elif case == "small":
    _halves(20, 200).save(path)
  with pytest.raises(image_loading.ImageLoadError, match="bad.jpg") as info:
    image_loading.load_image(path)
  assert info.value.reason == reason


def test_wrong_types_are_refused():
  with pytest.raises(image_loading.ImageLoadError, match="float32") as info:
    image_loading.load_image(np.zeros([64, 64, 3], np.float32))
  assert info.value.reason == "bad_array"
  with pytest.raises(image_loading.ImageLoadError, match="file path") as info:
    image_loading.load_image(12345)
  assert info.value.reason == "bad_type"
