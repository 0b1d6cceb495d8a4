"""Training augmentations do what their config fields say, per image, and nothing when off."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from fer_flax.core.errors import UserError
from fer_flax.data import augment


def _config(**fields) -> ml_collections.ConfigDict:
  config = base.get_config().augment
  config.update(fields)
  return config


def _faces(n=16, seed=0) -> jax.Array:
  """Smooth random images in [0, 1] (bilinear resampling of noise would blur it)."""
  rng = np.random.default_rng(seed)
  small = rng.random((n, 6, 6, 1)).astype(np.float32)
  return jax.image.resize(jnp.asarray(small), (n, 48, 48, 1), 'bilinear')


def test_all_off_is_the_identity():
  images = _faces()
  np.testing.assert_array_equal(augment.augment_images(images, jax.random.key(0), _config()),
                                images)
  targets = jnp.eye(7)[jnp.arange(16) % 7]
  mixed, mixed_targets = augment.mix(images, targets, jax.random.key(0), _config())
  assert mixed is images and mixed_targets is targets


@pytest.mark.parametrize('fields, outcomes', [
    ({'flip': True}, 2), ({'crop_padding': 4}, 8), ({'rotation': 15.0}, 8), ({'scale': 0.2}, 8),
    ({'shift': 0.1}, 8), ({'erase_probability': 1.0}, 8), ({'blur_probability': 1.0}, 8)])
def test_each_augmentation_changes_images_per_image_within_range(fields, outcomes):
  images = jnp.broadcast_to(_faces(1), (16, 48, 48, 1))
  out = augment.augment_images(images, jax.random.key(0), _config(**fields))
  assert out.shape == images.shape and out.dtype == images.dtype
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  changed = np.abs(np.asarray(out - images)).reshape(16, -1).max(-1) > 1e-3
  assert changed.sum() >= 4  # Each image draws its own transform.
  assert len({np.asarray(o).tobytes() for o in out}) >= outcomes


def test_flip_mirrors_about_half_the_images_exactly(config=None):
  images = _faces(64)
  out = np.asarray(augment.augment_images(images, jax.random.key(1),
                                          config or _config(flip=True)))
  mirrored = np.all(np.isclose(out, np.asarray(images)[:, :, ::-1], atol=1e-5), axis=(1, 2, 3))
  same = np.all(np.isclose(out, np.asarray(images), atol=1e-5), axis=(1, 2, 3))
  assert np.all(mirrored | same) and 16 <= mirrored.sum() <= 48


def test_alternating_flips_mirror_exactly_the_faces_they_are_told_to():
  images = _faces(8)
  mirrored = jnp.array([True, False] * 4)
  out = np.asarray(augment.augment_images(images, jax.random.key(1), _config(flip=True),
                                          mirrored))
  expected = np.where(np.asarray(mirrored)[:, None, None, None], np.asarray(images)[:, :, ::-1],
                      np.asarray(images))
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_the_clean_epochs_keep_flips_and_nothing_else():
  config = base.get_config().augment
  config.update(flip=True, rotation=10.0, scale=0.1, shift=0.1, crop_padding=2,
                blur_probability=0.5, erase_probability=0.25, mixup_alpha=0.2, cutmix_alpha=1.0)
  clean = augment.flips_only(config)
  assert clean.flip and config.rotation == 10.0  # the config itself is left as it was
  assert {k: v for k, v in clean.items() if k != 'flip' and v} == {
      'blur_sigma': 1.0, 'erase_min_area': 0.02, 'erase_max_area': 0.25}
  test_flip_mirrors_about_half_the_images_exactly(clean)


def test_crop_with_padding_is_an_integer_shift_of_the_edge_padded_image():
  images = np.asarray(_faces(8))
  out = np.asarray(augment.augment_images(jnp.asarray(images), jax.random.key(2),
                                          _config(crop_padding=3)))
  padded = np.pad(images, ((0, 0), (3, 3), (3, 3), (0, 0)), mode='edge')
  for image, crop in zip(padded, out, strict=True):
    assert any(np.allclose(image[y:y + 48, x:x + 48], crop, atol=1e-5)
               for y in range(7) for x in range(7))


def test_a_constant_image_stays_constant_under_rotation_scale_and_shift():
  images = jnp.full((4, 48, 48, 1), 0.3)
  out = augment.augment_images(images, jax.random.key(3),
                               _config(rotation=30.0, scale=0.3, shift=0.2))
  np.testing.assert_allclose(out, images, atol=1e-6)


def test_blur_spreads_a_point_into_a_gaussian_of_each_images_own_width():
  images = jnp.zeros((64, 48, 48, 1)).at[:, 24, 24].set(1.0)
  out = np.asarray(augment.augment_images(images, jax.random.key(5),
                                          _config(blur_probability=0.5, blur_sigma=1.5)))[..., 0]
  np.testing.assert_allclose(out.sum((1, 2)), 1.0, atol=1e-5)
  profiles = out.sum(1)  # Each image's blur along x; separable, so the same along y.
  np.testing.assert_allclose(out, profiles[:, :, None] * profiles[:, None, :], atol=1e-6)
  np.testing.assert_allclose(profiles[:, 1:24], profiles[:, 47:24:-1], atol=1e-6)  # symmetric
  widths = np.sqrt((profiles * (np.arange(48) - 24.0) ** 2).sum(-1))
  untouched = widths < 1e-3
  assert 16 <= untouched.sum() <= 48  # blur_probability 0.5
  assert np.all(widths <= 1.5) and widths.max() > 1.0  # uniform in [0, blur_sigma], truncated


def test_random_erasing_covers_a_rectangle_of_the_configured_area():
  images = jnp.full((32, 48, 48, 1), 2.0)  # Outside [0, 1], so the noise is told apart.
  out = np.asarray(augment.augment_images(
      images, jax.random.key(4), _config(erase_probability=1.0, erase_min_area=0.1,
                                         erase_max_area=0.2)))
  for erased in out[..., 0] < 1.5:
    rows, cols = np.nonzero(erased.any(1))[0], np.nonzero(erased.any(0))[0]
    assert erased.sum() == len(rows) * len(cols)  # One solid rectangle.
    assert 0.05 * 48 * 48 <= erased.sum() <= 0.25 * 48 * 48


@pytest.mark.parametrize('fields', [{'mixup_alpha': 0.4}, {'cutmix_alpha': 1.0}])
def test_mixing_mixes_targets_in_the_proportion_it_mixes_images(fields):
  images = jnp.concatenate([jnp.zeros((4, 48, 48, 1)), jnp.ones((4, 48, 48, 1))])
  targets = jnp.repeat(jnp.eye(2), 4, axis=0)
  for seed in range(5):
    mixed, mixed_targets = augment.mix(images, targets, jax.random.key(seed), _config(**fields))
    # Image i is mixed with image 7 - i: the share of the other image is the mean pixel change.
    share_of_other = np.abs(np.asarray(mixed - images)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(mixed_targets).sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(1 - np.asarray(mixed_targets)[np.arange(8), np.arange(8) // 4],
                               share_of_other, atol=1e-5)


def test_tta_views():
  images = jnp.arange(2 * 48 * 48, dtype=jnp.float32).reshape(2, 48, 48, 1)
  assert augment.tta_views(images, 'none').shape == (1, 2, 48, 48, 1)
  flip = augment.tta_views(images, 'flip')
  np.testing.assert_array_equal(flip[1], images[:, :, ::-1])
  ten = augment.tta_views(images, 'tencrop', shift=4)
  assert ten.shape == (10, 2, 48, 48, 1)
  np.testing.assert_array_equal(ten[4], images)  # the centre crop is the image itself
  np.testing.assert_array_equal(ten[9], images[:, :, ::-1])
  np.testing.assert_array_equal(ten[0][:, 4:, 4:], images[:, :-4, :-4])  # shifted by 4 pixels
  with pytest.raises(UserError, match="tta='rotate': choose one of none, flip, tencrop"):
    augment.tta_views(images, 'rotate')
