"""Any photo becomes the 48x48 grayscale face the models see."""

import numpy as np
from PIL import Image

from fer_flax.data import images


def test_colour_and_other_sizes_become_48x48_grayscale():
  colour = Image.new('RGB', (100, 80), (255, 0, 0))
  out = images.to_model_input(colour)
  assert out.shape == (48, 48) and out.dtype == np.uint8
  assert np.all(out == np.asarray(colour.convert('L'))[0, 0])
  rgba = Image.new('RGBA', (10, 10), (0, 0, 0, 0))  # transparent pixels count as white
  assert np.all(images.to_model_input(rgba) == 255)
