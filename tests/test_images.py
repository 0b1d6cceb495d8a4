"""Any photo becomes the 48x48 grayscale face the models see."""

import numpy as np
import pytest
from PIL import Image

from fer_flax.core.errors import ImageError
from fer_flax.data import images


def test_colour_and_other_sizes_become_48x48_grayscale():
  colour = Image.new('RGB', (100, 80), (255, 0, 0))
  out = images.to_model_input(colour)
  assert out.shape == (48, 48) and out.dtype == np.uint8
  assert np.all(out == np.asarray(colour.convert('L'))[0, 0])
  rgba = Image.new('RGBA', (10, 10), (0, 0, 0, 0))  # transparent pixels count as white
  assert np.all(images.to_model_input(rgba) == 255)


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
  values = np.array([[0, 257, 32896, 65535]], np.uint16)
  for mode_image in (Image.fromarray(values), Image.fromarray(values.astype(np.int32))):
    np.testing.assert_array_equal(np.asarray(images.grayscale(mode_image)), [[0, 1, 128, 255]])


def test_floating_point_images_are_refused_with_the_fix():
  with pytest.raises(ImageError, match='save it with 8 or 16 bits') as refused:
    images.grayscale(Image.fromarray(np.zeros((4, 4), np.float32)))
  assert refused.value.reason == 'unsupported'
