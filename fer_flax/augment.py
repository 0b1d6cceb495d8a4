"""Image augmentations written once in JAX, so every input path shares them.

Test-time augmentation (TTA) evaluates several views of each face and averages their probabilities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fer_flax.errors import UserError

TTA_MODES = ('none', 'flip', 'tencrop')


def tta_views(images: jax.Array, mode: str, shift: int = 4) -> jax.Array:
  """[V, B, H, W, C] views of a [B, H, W, C] batch.

  `flip`: the image and its mirror. `tencrop`: five crops of the full size from the image padded
  by `shift` pixels (four corners and the centre, i.e. shifts of +-shift), and their mirrors; unlike
  crops that shrink the face, these fit any model trained on whole 48x48 faces.
  """
  if mode == 'none':
    return images[None]
  if mode == 'flip':
    return jnp.stack([images, images[:, :, ::-1]])
  if mode == 'tencrop':
    _, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode='edge')
    offsets = [(0, 0), (0, 2 * shift), (2 * shift, 0), (2 * shift, 2 * shift), (shift, shift)]
    crops = [padded[:, y:y + h, x:x + w] for y, x in offsets]
    return jnp.stack(crops + [c[:, :, ::-1] for c in crops])
  raise UserError(f'unknown test-time augmentation {mode!r}; choose one of {", ".join(TTA_MODES)}')
