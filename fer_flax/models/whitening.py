"""A frozen first layer that whitens small patches of the face, as airbench does (Jordan, 2024).

Its filters are the eigenvectors of the training patches' second-moment matrix, each scaled by
1 / sqrt(eigenvalue + eps) and paired with its negative, so the ReLU after it keeps both signs:
the network's first learned layer starts from decorrelated, equal-variance inputs. The kernel is
computed once from training images (`whitening_kernel`, set by `fer_flax.train.build`) and never
trained or decayed; its bias learns.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NAME = 'PatchWhitening'


def whitening_kernel(images: jax.Array, size: int, eps: float = 5e-4) -> jax.Array:
  """[size, size, C, 2 size^2 C] filters that whiten the size x size patches of `images`.

  `images` [..., H, W, C] as the model takes them (floats in [0, 1]); the patches are the windows
  inside the image, uncentred, as airbench estimates them. Their moments are one contraction over
  every leading axis, never a reshape that merges them, so a batch sharded over devices stays
  sharded: each device sums its own faces' patches, and the sums are added across devices.
  """
  *_, h, w, c = images.shape
  patches = jnp.stack([images[..., i:h - size + 1 + i, j:w - size + 1 + j, :]
                       for i in range(size) for j in range(size)], axis=-2)
  # (i, j, channel) order
  patches = patches.reshape(*patches.shape[:-2], size * size * c).astype(jnp.float32)
  leading = tuple(range(patches.ndim - 1))
  moments = jnp.tensordot(patches, patches, axes=(leading, leading))
  eigenvalues, eigenvectors = jnp.linalg.eigh(moments / math.prod(patches.shape[:-1]))
  filters = eigenvectors / jnp.sqrt(eigenvalues + eps)  # one filter per column
  filters = filters[:, ::-1].reshape(size, size, c, -1)  # largest eigenvalue first
  return jnp.concatenate([filters, -filters], axis=-1)


class PatchWhitening(nn.Module):
  """`size` x `size` whitening filters (and their negatives), frozen; a learned bias.

  The kernel parameter starts at zero and is set from data before training; gradients never reach
  it, and the optimizer's weight decay leaves it alone (`is_frozen`).
  """
  size: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    features = 2 * self.size * self.size * x.shape[-1]
    kernel = self.param('kernel', nn.initializers.zeros_init(),
                        (self.size, self.size, x.shape[-1], features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (features,), jnp.float32)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), jax.lax.stop_gradient(kernel).astype(self.dtype), (1, 1), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias.astype(self.dtype)


def is_frozen(path: tuple[Any, ...]) -> bool:
  """Whether the parameter at `path` (a `jax.tree_util` key path) is a whitening kernel."""
  names = [str(getattr(key, 'key', key)) for key in path]
  return names[-1] == 'kernel' and any(name.startswith(NAME) for name in names)


def with_kernel(params: dict[str, Any], kernel: jax.Array) -> dict[str, Any]:
  """`params` with every whitening layer's kernel replaced by `kernel`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: kernel.astype(p.dtype) if is_frozen(path) else p, params)
