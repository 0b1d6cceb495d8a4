"""Any photo as the faces the models see: upright, opaque, 48x48 uint8 grayscale. Training data
and photos at prediction time both pass through here, so they match."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from fer_flax.core.errors import ImageError

IMAGE_SIZE = 48


def _eight_bit(image: Image.Image) -> Image.Image:
  """16-bit grayscale (PNG, TIFF) scaled to 8 bits; PIL's own conversion clips it to white."""
  if image.mode == 'F':
    raise ImageError('a floating-point image has no fixed white; save it with 8 or 16 bits per '
                     'channel', 'unsupported')
  values = np.clip(np.asarray(image, np.int64), 0, 65535)
  return Image.fromarray(((values + 128) // 257).astype(np.uint8), 'L')


def _opaque(image: Image.Image) -> Image.Image:
  """Any PIL image, upright per its EXIF, as L or RGB, transparency composited on white."""
  image = ImageOps.exif_transpose(image)
  if image.mode in ('I', 'F') or image.mode.startswith('I;16'):
    image = _eight_bit(image)
  if image.mode not in ('L', 'RGB'):
    image = image.convert('RGBA' if 'A' in image.getbands() or image.mode == 'P' else 'RGB')
    if image.mode == 'RGBA':
      white = Image.new('RGBA', image.size, (255, 255, 255, 255))
      image = Image.alpha_composite(white, image)
  return image


def grayscale(image: Image.Image) -> Image.Image:
  """Any PIL image (upright per its EXIF, transparency on white) as 8-bit grayscale."""
  return _opaque(image).convert('L')


def rgb(image: Image.Image) -> Image.Image:
  """Any PIL image (upright per its EXIF, transparency on white) as 8-bit RGB."""
  return _opaque(image).convert('RGB')


def to_model_input(image: Image.Image) -> np.ndarray:
  """Converts any PIL image to the 48x48 uint8 grayscale array the models see."""
  image = grayscale(image)
  if image.size != (IMAGE_SIZE, IMAGE_SIZE):
    image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
  return np.asarray(image, dtype=np.uint8)
