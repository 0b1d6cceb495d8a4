"""Stock Flax layers, rewritten so that XLA:CPU differentiates them faster.

Each one computes what the stock layer computes (same parameters, values and gradients); the test
named in its docstring proves it, and docs/speed.md gives what each saves. The models use
them on every platform: on accelerators they cost nothing and change no result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _pool_windows(x: jnp.ndarray) -> jnp.ndarray:
  """[B, H, W, C] -> [B, H/2, 2, W/2, 2, C]; an odd last row or column is dropped, as VALID does."""
  b, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """`nn.max_pool(x, (2, 2), strides=(2, 2))`, with a one-pass gradient.

  XLA:CPU differentiates `reduce_window` with a slow `select_and_scatter`; this gradient is one
  elementwise pass that, like it, gives each window's gradient to its first maximum in row-major
  order. Equality: tests/test_layers.py::
  test_max_pool_has_the_values_and_gradients_of_flax_max_pool.
  """
  return _pool_windows(x).max(axis=(2, 4))


def _max_pool_fwd(x: jnp.ndarray) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray]]:
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_bwd(residuals: tuple[jnp.ndarray, jnp.ndarray],
                  dy: jnp.ndarray) -> tuple[jnp.ndarray]:
  x, y = residuals
  is_max = _pool_windows(x) == y[:, :, None, :, None]
  e00, e01, e10 = is_max[:, :, 0, :, 0], is_max[:, :, 0, :, 1], is_max[:, :, 1, :, 0]
  first = jnp.stack([jnp.stack([e00, e01 & ~e00], 3),
                     jnp.stack([e10 & ~(e00 | e01), ~(e00 | e01 | e10)], 3)], 2)
  dx = jnp.where(first, dy[:, :, None, :, None], jnp.zeros((), dy.dtype))
  b, h, w, c = x.shape
  dx = dx.reshape(b, h // 2 * 2, w // 2 * 2, c)
  return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


def _lax_conv(x: jnp.ndarray, kernel: jnp.ndarray,
              padding: tuple[tuple[int, int], ...]) -> jnp.ndarray:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _patch_conv(x: jnp.ndarray, kernel: jnp.ndarray,
                padding: tuple[tuple[int, int], ...]) -> jnp.ndarray:
  return _lax_conv(x, kernel, padding)


def _patch_conv_fwd(x, kernel, padding):
  return _patch_conv(x, kernel, padding), (x, kernel)


def _patch_conv_bwd(padding, residuals, dy):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  ho, wo = dy.shape[1:3]
  padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  patches = jnp.concatenate([padded[:, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)],
                            axis=-1)
  dkernel = jnp.einsum('bhwk,bhwo->ko', patches, dy).reshape(kernel.shape).astype(kernel.dtype)
  _, conv_vjp = jax.vjp(lambda x: _lax_conv(x, kernel, padding), x)
  return conv_vjp(dy)[0], dkernel


_patch_conv.defvjp(_patch_conv_fwd, _patch_conv_bwd)


def _conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], padding: str,
          feature_group_count: int) -> jnp.ndarray:
  """A 2-D NHWC convolution; a unit-stride one on few input channels (the grayscale input) gets
  its kernel gradient as one matrix product of the input's patches with the output gradient."""
  kh, kw, in_features, _ = kernel.shape
  if strides == (1, 1) and feature_group_count == 1 and kh * kw * in_features <= 32:
    pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (1, 1), padding)
    return _patch_conv(x, kernel, tuple(tuple(p) for p in pads))
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC,
                                      feature_group_count=feature_group_count)


def sum_over_leading_axes(x: jnp.ndarray) -> jnp.ndarray:
  """`x.sum(axis=all but the last)`, as a wide reduction and then a narrow one.

  XLA:CPU reduces [N, C] to [C] slowly when C is small; [N/8, 8C] then [8, C] is fast.
  Equality: tests/test_layers.py::test_sum_over_leading_axes.
  """
  rows = x.reshape(-1, x.shape[-1])
  fold = 8 if rows.shape[0] % 8 == 0 else 1
  return rows.reshape(-1, fold * x.shape[-1]).sum(0).reshape(fold, -1).sum(0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def broadcast_channels(v: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
  """`v` [C] broadcast to `shape` [..., C], its gradient summed by `sum_over_leading_axes`."""
  return jnp.broadcast_to(v, shape)


broadcast_channels.defvjp(lambda v, shape: (jnp.broadcast_to(v, shape), None),
                          lambda shape, _, dy: (sum_over_leading_axes(dy),))


@jax.custom_vjp
def add_channels(x: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
  """`x` [..., C] + `v` [C], the gradient of `v` summed by `sum_over_leading_axes`.

  `v` is broadcast implicitly, not to `x`'s shape, so that an exported graph holds no constant
  the size of the batch (TFLite folds a per-channel constant into the convolution before it).
  """
  return x + v


add_channels.defvjp(lambda x, v: (x + v, None),
                    lambda _, dy: (dy, sum_over_leading_axes(dy)))


class Conv(nn.Module):
  """`nn.Conv` for NHWC images, with its parameters (names, shapes, initialisation), whose bias and
  first-layer kernel gradients XLA:CPU computes faster.

  Equality: tests/test_layers.py::test_conv_has_the_parameters_values_and_gradients_of_flax_conv.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: str = 'SAME'
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    in_features = x.shape[-1] // self.feature_group_count
    kernel = self.param('kernel', self.kernel_init,
                        (*self.kernel_size, in_features, self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    y = _conv(x, kernel, (self.strides, self.strides), self.padding, self.feature_group_count)
    if not self.use_bias:
      return y
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return add_channels(y, bias.astype(self.dtype))


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over all but the channel axis, with its variables and values, whose batch
  statistics and gradients XLA:CPU reduces fast (`sum_over_leading_axes`).

  Equality: tests/test_layers.py::
  test_batch_norm_has_the_variables_values_and_gradients_of_flax_batch_norm.
  """
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  use_scale: bool = True
  scale_init: Callable = nn.initializers.ones_init()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    features = x.shape[-1]
    scale = (self.param('scale', self.scale_init, (features,), jnp.float32) if self.use_scale
             else jnp.ones((features,), jnp.float32))
    bias = self.param('bias', nn.initializers.zeros_init(), (features,), jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    if self.use_running_average:
      # Nothing is differentiated here: implicit broadcasting, as in `add_channels`.
      multiplier = jax.lax.rsqrt(running_var.value + self.epsilon) * scale
      return ((x - running_mean.value) * multiplier + bias).astype(self.dtype)
    x32, count = x.astype(jnp.float32), x.size // features
    mean = sum_over_leading_axes(x32) / count
    var = jnp.maximum(0.0, sum_over_leading_axes(x32 * x32) / count - mean * mean)
    if not self.is_initializing():
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    multiplier = jax.lax.rsqrt(var + self.epsilon) * scale
    y = ((x - broadcast_channels(mean, x.shape)) * broadcast_channels(multiplier, x.shape)
         + broadcast_channels(bias, x.shape))
    return y.astype(self.dtype)
