"""Image augmentations written once in JAX, so every input path shares them.

Training augmentation runs per image inside the compiled train step; mixup and CutMix mix a batch.
Test-time augmentation (TTA) evaluates several views of each face and averages their probabilities.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections

from fer_flax.core.errors import UserError

TTA_MODES = ('none', 'flip', 'tencrop')


def check_tta(mode: str, name: str = 'tta') -> None:
  """Raises a UserError naming `name` unless `mode` is one of `TTA_MODES`."""
  if mode not in TTA_MODES:
    raise UserError(f'{name}={mode!r}: choose one of {", ".join(TTA_MODES)}')


def tta_views(images: jax.Array, mode: str, shift: int = 4) -> jax.Array:
  """[V, B, H, W, C] views of a [B, H, W, C] batch.

  `flip`: the image and its mirror. `tencrop`: five crops of the full size from the image padded
  by `shift` pixels (four corners and the centre, i.e. shifts of +-shift), and their mirrors; unlike
  crops that shrink the face, these fit any model trained on whole 48x48 faces.
  """
  check_tta(mode)
  if mode == 'none':
    return images[None]
  if mode == 'flip':
    return jnp.stack([images, images[:, :, ::-1]])
  _, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode='edge')
  offsets = [(0, 0), (0, 2 * shift), (2 * shift, 0), (2 * shift, 2 * shift), (shift, shift)]
  crops = [padded[:, y:y + h, x:x + w] for y, x in offsets]
  return jnp.stack(crops + [c[:, :, ::-1] for c in crops])


def _warp(image: jax.Array, rng: jax.Array, mirrored: jax.Array | None = None, *, flip: bool,
          crop_padding: int, rotation: float, scale: float, shift: float) -> jax.Array:
  """One random affine resampling of an [H, W, C] image: flip, crop, rotation, scale and shift.

  A crop from the image padded by `crop_padding` edge pixels is an integer shift of up to that
  many pixels, so every geometric augmentation is one bilinear resampling with edge extension.
  The image is mirrored by a coin, or where `mirrored` is given (alternating flips), by it.
  """
  h, w, _ = image.shape
  k_flip, k_crop, k_rot, k_scale, k_shift = jax.random.split(rng, 5)
  angle = jnp.deg2rad(jax.random.uniform(k_rot, (), minval=-rotation, maxval=rotation))
  zoom = jnp.exp(jax.random.uniform(k_scale, (), minval=-1.0, maxval=1.0) * jnp.log1p(scale))
  if mirrored is None:
    mirrored = jax.random.bernoulli(k_flip)
  mirror = jnp.where(flip & mirrored, -1.0, 1.0)
  offset = (jax.random.uniform(k_shift, (2,), minval=-shift, maxval=shift) * jnp.array([h, w])
            + jax.random.randint(k_crop, (2,), -crop_padding, crop_padding + 1))
  # Each output pixel samples the input at centre + R(-angle) (out - centre - offset) / zoom.
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing='ij')
  cy, cx = (h - 1) / 2, (w - 1) / 2
  dy, dx = ys - cy - offset[0], (xs - cx - offset[1]) * mirror
  src_y = cy + (cos * dy - sin * dx) / zoom
  src_x = cx + (sin * dy + cos * dx) / zoom
  channels = [jax.scipy.ndimage.map_coordinates(image[..., c], [src_y, src_x], order=1,
                                                mode='nearest') for c in range(image.shape[-1])]
  return jnp.stack(channels, axis=-1)


def _blur(image: jax.Array, rng: jax.Array, *, probability: float, sigma: float) -> jax.Array:
  """With `probability`, a Gaussian blur of width uniform in [0, sigma] pixels.

  Faces cropped from photos are resampled from another resolution, which softens them; FER2013's
  own faces are all one softness, and models trained on them alone lose points on softer crops.
  """
  h, w, _ = image.shape
  k_apply, k_sigma = jax.random.split(rng)
  width = jax.random.uniform(k_sigma, (), minval=0.0, maxval=sigma)
  width = jnp.where(jax.random.bernoulli(k_apply, probability), width, 0.0)
  radius = math.ceil(3 * sigma)
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * (taps / jnp.maximum(width, 1e-3)) ** 2)
  weights = (weights / weights.sum()).astype(image.dtype)
  padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode='edge')
  rows = sum(weights[i] * padded[i:i + h] for i in range(2 * radius + 1))
  return sum(weights[i] * rows[:, i:i + w] for i in range(2 * radius + 1))


def _erase(image: jax.Array, rng: jax.Array, *, probability: float, min_area: float,
           max_area: float) -> jax.Array:
  """Random erasing (Zhong et al., 2020): with `probability`, noise over a random rectangle."""
  h, w, c = image.shape
  k_apply, k_area, k_aspect, k_y, k_x, k_noise = jax.random.split(rng, 6)
  area = jax.random.uniform(k_area, (), minval=min_area, maxval=max_area) * h * w
  aspect = jnp.exp(jax.random.uniform(k_aspect, (), minval=jnp.log(0.3), maxval=jnp.log(1 / 0.3)))
  eh = jnp.clip(jnp.sqrt(area * aspect), 1, h).astype(jnp.int32)
  ew = jnp.clip(jnp.sqrt(area / aspect), 1, w).astype(jnp.int32)
  top = jax.random.randint(k_y, (), 0, h - eh + 1)
  left = jax.random.randint(k_x, (), 0, w - ew + 1)
  rows, cols = jnp.arange(h)[:, None, None], jnp.arange(w)[None, :, None]
  inside = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)
  inside &= jax.random.bernoulli(k_apply, probability)
  return jnp.where(inside, jax.random.uniform(k_noise, (h, w, c), image.dtype), image)


def is_geometric(config: ml_collections.ConfigDict) -> bool:
  return bool(config.flip or config.crop_padding or config.rotation or config.scale
              or config.shift)


def alternates_flips(config: ml_collections.ConfigDict) -> bool:
  """Whether `config.augment` mirrors each face on alternate epochs (the in-memory input gives
  each batch its faces' sides) rather than by a coin."""
  return bool(config.flip and config.get('alternate_flips', False))


def flips_only(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.augment` with every augmentation but the horizontal flip off: the last epochs of a
  run with `clean_last_epochs` train on the faces as they are, mirrored or not."""
  clean = config.copy_and_resolve_references()
  for field in ('crop_padding', 'rotation', 'scale', 'shift', 'blur_probability',
                'erase_probability', 'mixup_alpha', 'cutmix_alpha'):
    clean[field] = type(config[field])(0)
  return clean


def augment_images(images: jax.Array, rng: jax.Array, config: ml_collections.ConfigDict,
                   mirrored: jax.Array | None = None) -> jax.Array:
  """Per-image training augmentation of a [B, H, W, C] batch in [0, 1], per `config.augment`.

  Runs inside the compiled train step, so the tf.data and the in-memory input paths share it.
  `mirrored` [B] (alternating flips) says which faces to mirror, instead of a coin per face.
  """
  keys = jax.random.split(rng, (2, images.shape[0]))
  if is_geometric(config):
    warp = functools.partial(_warp, flip=config.flip, crop_padding=config.crop_padding,
                             rotation=config.rotation, scale=config.scale, shift=config.shift)
    images = jax.vmap(warp)(images, keys[0], mirrored)
  if config.blur_probability:
    blur = functools.partial(_blur, probability=config.blur_probability, sigma=config.blur_sigma)
    # A key of its own, so that configs without blur draw what they drew before it existed.
    images = jax.vmap(blur)(images, jax.random.split(jax.random.fold_in(rng, 2), images.shape[0]))
  if config.erase_probability:
    erase = functools.partial(_erase, probability=config.erase_probability,
                              min_area=config.erase_min_area, max_area=config.erase_max_area)
    images = jax.vmap(erase)(images, keys[1])
  return images


def mix(images: jax.Array, targets: jax.Array, rng: jax.Array,
        config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """Mixup (Zhang et al., 2018) or CutMix (Yun et al., 2019) of a batch with its reverse.

  With both enabled each batch uses one of them at random. One mixing weight per batch, as in
  the papers; for CutMix the weight is the pasted area actually used.
  """
  if not (config.mixup_alpha or config.cutmix_alpha):
    return images, targets
  k_choice, k_mixup, k_cutmix, k_y, k_x = jax.random.split(rng, 5)
  other_images, other_targets = images[::-1], targets[::-1]
  mixup_lam = (jax.random.beta(k_mixup, config.mixup_alpha, config.mixup_alpha)
               if config.mixup_alpha else jnp.float32(1))
  if not config.cutmix_alpha:
    use_cutmix, lam_cut, box = False, jnp.float32(1), None
  else:
    _, h, w, _ = images.shape
    cut = jnp.sqrt(1 - jax.random.beta(k_cutmix, config.cutmix_alpha, config.cutmix_alpha))
    ch, cw = (cut * h).astype(jnp.int32), (cut * w).astype(jnp.int32)
    cy, cx = jax.random.randint(k_y, (), 0, h), jax.random.randint(k_x, (), 0, w)
    y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + (ch + 1) // 2, 0, h)
    x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + (cw + 1) // 2, 0, w)
    rows, cols = jnp.arange(h)[:, None, None], jnp.arange(w)[None, :, None]
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    lam_cut = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    use_cutmix = (jax.random.bernoulli(k_choice) if config.mixup_alpha else True)
  lam = jnp.where(use_cutmix, lam_cut, mixup_lam).astype(images.dtype)
  mixed = lam * images + (1 - lam) * other_images
  if box is not None:
    mixed = jnp.where(use_cutmix, jnp.where(box, other_images, images), mixed)
  return mixed, lam * targets + (1 - lam) * other_targets
