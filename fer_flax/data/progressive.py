"""Progressive resizing: a run's first epochs on smaller faces, whose steps cost less, then the rest
at 48x48 (fast.ai's DAWNBench ImageNet runs; Tan and Le, EfficientNetV2, 2021).

`config.progressive.sizes` (smallest first) and `.fractions` (the share of the run's epochs each
trains for) set the schedule; the train step downsamples its augmented batch to the epoch's size,
and a flattening head pools the smaller grid onto its own (`models.flatten_grid`). Evaluation is
always at 48x48.
"""

from __future__ import annotations

import math

import jax
import ml_collections

from fer_flax.core.errors import UserError
from fer_flax.data import fer2013

# Four 2x2 pools leave at least one cell of a face this large.
MIN_SIZE = 16


def check(config: ml_collections.ConfigDict) -> None:
  """Refuses a schedule that is not a few sizes below 48, smallest first, over part of the run."""
  sizes, fractions = tuple(config.progressive.sizes), tuple(config.progressive.fractions)
  if len(sizes) != len(fractions):
    raise UserError(f'config.progressive.sizes {sizes} and .fractions {fractions} differ in '
                    'length; give each size the share of the epochs it trains for')
  if any(not MIN_SIZE <= s < fer2013.IMAGE_SIZE for s in sizes) or list(sizes) != sorted(sizes):
    raise UserError(f'config.progressive.sizes {sizes}: give image sizes from {MIN_SIZE} to '
                    f'{fer2013.IMAGE_SIZE - 1}, smallest first (the rest of the run is at '
                    f'{fer2013.IMAGE_SIZE})')
  if any(f <= 0 for f in fractions) or sum(fractions) >= 1:
    raise UserError(f'config.progressive.fractions {fractions}: give positive shares of the run '
                    'that add up to less than 1 (the rest of the run is at full size)')


def epoch_sizes(config: ml_collections.ConfigDict, num_epochs: int | None = None) -> list[int]:
  """The image size of each epoch of the run (of `num_epochs` instead of `config.num_epochs` when
  given); each size's share ends at the nearest epoch."""
  check(config)
  sizes, ends, total = [], 0.0, num_epochs or config.num_epochs
  for size, fraction in zip(config.progressive.sizes, config.progressive.fractions, strict=True):
    ends += fraction
    sizes += [size] * (math.floor(ends * total + 0.5) - len(sizes))
  return sizes + [fer2013.IMAGE_SIZE] * (total - len(sizes))


def resize(images: jax.Array, size: int) -> jax.Array:
  """[B, 48, 48, C] images downsampled to [B, size, size, C], antialiased as a smaller photo is."""
  if images.shape[1] == size:
    return images
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]), 'linear',
                          antialias=True)
