"""Pixel scaling before a patch backbone: what each backbone's weights were trained on."""

import tensorflow as tf

# torchvision's ImageNet statistics (`torchvision.transforms.Normalize` in every torchvision /
# timm ResNeXt recipe), applied to pixels scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", "unit", "symmetric", "efficientnet_lite")


def normalize_pixels(pixels, normalization):
  """Scales float32 pixel values in [0, 255] for a backbone.

  Args:
    pixels: float32 [..., 3], RGB in [0, 255].
    normalization: "imagenet" (x / 255, then (x - mean) / std with torchvision's ImageNet mean and
      std per channel: what torchvision / timm ResNeXt weights were trained on), "unit" (x / 255,
      in [0, 1]), "symmetric" (x / 127.5 - 1, in [-1, 1]: Keras' InceptionV3 preprocessing) or
      "efficientnet_lite" ((x - 127) / 128: MEAN_RGB 127 and STDDEV_RGB 128 of TensorFlow's
      efficientnet_lite_builder.py, what EfficientNet-Lite was trained on).
  """
  if normalization == "efficientnet_lite":
    return (pixels - 127.0) / 128.0
  if normalization == "unit":
    return pixels / 255.0
  if normalization == "symmetric":
    return pixels / 127.5 - 1.0
  if normalization == "imagenet":
    mean = tf.constant(IMAGENET_MEAN, pixels.dtype)
    std = tf.constant(IMAGENET_STD, pixels.dtype)
    return (pixels / 255.0 - mean) / std
  raise ValueError(
      f"model.image_normalization: unknown normalization {normalization!r}; expected one of "
      f"{', '.join(NORMALIZATIONS)} (or empty for the backbone's default)")
