"""Where XLA:CPU spends `seed_cnn`'s training step, and what rewriting its heavy layers does.

  python benchmarks/cpu_kernels.py [--batch=64] [--repeats=10]

Times the two heavy layers of the step (the 64->128 convolution and the 18432->512 dense
layer, most of its FLOPs) alone, jitted with `configs/base.py`'s CPU compiler options:
its forward pass, its input gradient and its kernel gradient, with the FLOP/s each reaches. Then
each reformulation tried in their place (docs/speed.md), after checking that it gives the plain
layer's values: the kernel gradient as matrix products of the input's shifted copies, the 3x3
convolution as Winograd F(2x2, 3x3) (2.25x fewer multiplications), the dense layer on YNNPACK's
dot kernels and as a convolution. The median of `--repeats` calls after one warm call; GFLOP/s
counts the plain layer's FLOPs, so a reformulation's figure is its effective rate.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from configs import base  # pylint: disable=g-import-not-at-top

_NHWC = ('NHWC', 'HWIO', 'NHWC')
_WINOGRAD_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)


def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=_NHWC)


def kernel_gradient_by_products(x: jax.Array, dy: jax.Array) -> jax.Array:
  """The 3x3 kernel's gradient as nine [C_in, N*H*W] x [N*H*W, C_out] matrix products."""
  n, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  flat_dy = dy.reshape(-1, dy.shape[-1])
  return jnp.stack([jnp.stack([padded[:, i:i + h, j:j + w].reshape(-1, c).T @ flat_dy
                               for j in range(3)]) for i in range(3)])


def _winograd_input(x: jax.Array, axis: int) -> jax.Array:
  """B^T applied to the stride-2 windows of 4 along `axis` (length 2T + 2): a new leading 4."""
  halves = x.reshape(*x.shape[:axis], x.shape[axis] // 2, 2, *x.shape[axis + 1:])
  even, odd = jnp.take(halves, 0, axis + 1), jnp.take(halves, 1, axis + 1)
  length = x.shape[axis] // 2 - 1
  e0, e1, o0, o1 = (jax.lax.slice_in_dim(a, s, s + length, axis=axis)
                    for a, s in ((even, 0), (even, 1), (odd, 0), (odd, 1)))
  return jnp.stack([e0 - e1, o0 + e1, e1 - o0, o0 - o1])


def winograd_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`conv` (3x3, SAME, even sizes) as Winograd F(2x2, 3x3): 16 products of transformed tiles."""
  n, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = _winograd_input(padded, 1)                                  # [4, n, h/2, w+2, c]
  tiles = jax.vmap(lambda r: _winograd_input(r, 2))(rows)            # [4, 4, n, h/2, w/2, c]
  u = jnp.einsum('ai,ijcd,bj->abcd', _WINOGRAD_G, kernel, _WINOGRAD_G).reshape(16, c, -1)
  m = jax.lax.dot_general(tiles.reshape(16, -1, c), u, (((2,), (1,)), ((0,), (0,))))
  m = m.reshape(4, 4, n, h // 2, w // 2, -1)
  rows = jnp.stack([m[0] + m[1] + m[2], m[1] - m[2] - m[3]])         # A^T over the first 4
  y = jnp.stack([rows[:, 0] + rows[:, 1] + rows[:, 2], rows[:, 1] - rows[:, 2] - rows[:, 3]], 1)
  return y.transpose(2, 3, 0, 4, 1, 5).reshape(n, h, w, -1)


def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1) @ kernel


def dense_as_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The dense layer on the [N, H, W, C] features as one VALID H x W convolution."""
  n, h, w, c = x.shape
  return jax.lax.conv_general_dilated(x, kernel.reshape(h, w, c, -1), (1, 1), 'VALID',
                                      dimension_numbers=_NHWC).reshape(n, -1)


def milliseconds(fn: Callable, args: tuple, options: dict, repeats: int) -> float:
  compiled = jax.jit(fn).lower(*args).compile(options)
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - tic)
  return float(np.median(times)) * 1e3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()
  options = base.get_config().cpu_compiler_options.to_dict()
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  n = args.batch
  x1, x2 = normal(n, 24, 24, 64), normal(n, 12, 12, 128)
  k2, w = normal(3, 3, 64, 128) / 24, normal(18432, 512) / 136
  dy2, dy3 = normal(n, 24, 24, 128), normal(n, 512)
  layer_flops = {'conv 64->128 at 24x24': 2 * n * 24 * 24 * 9 * 64 * 128,
                 'dense 18432->512': 2 * n * 18432 * 512}
  input_grad = lambda f, k: lambda x, dy: jax.vjp(lambda x: f(x, k), x)[1](dy)[0]
  kernel_grad = lambda f, x: lambda k, dy: jax.vjp(lambda k: f(x, k), k)[1](dy)[0]
  both = lambda f: lambda x, k, dy: jax.vjp(f, x, k)[1](dy)
  rows = [  # (layer, what, function, arguments, compiler options)
      ('conv 64->128 at 24x24', 'forward', conv, (x1, k2), options),
      ('conv 64->128 at 24x24', 'input gradient', input_grad(conv, k2), (x1, dy2), options),
      ('conv 64->128 at 24x24', 'kernel gradient', kernel_grad(conv, x1), (k2, dy2), options),
      ('dense 18432->512', 'forward', dense, (x2, w), options),
      ('dense 18432->512', 'input gradient', input_grad(dense, w), (x2, dy3), options),
      ('dense 18432->512', 'kernel gradient', kernel_grad(dense, x2), (w, dy3), options),
      ('conv 64->128 at 24x24', 'kernel gradient as 9 products', kernel_gradient_by_products,
       (x1, dy2), options),
      ('conv 64->128 at 24x24', 'Winograd forward', winograd_conv, (x1, k2), options),
      ('conv 64->128 at 24x24', 'Winograd forward + both gradients', both(winograd_conv),
       (x1, k2, dy2), options),
      ('conv 64->128 at 24x24', 'forward + both gradients', both(conv), (x1, k2, dy2), options),
      ('dense 18432->512', 'forward + both gradients', both(dense), (x2, w, dy3), options),
      ('dense 18432->512', 'YNNPACK dots, forward + both gradients', both(dense), (x2, w, dy3),
       {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT'}),
      ('dense 18432->512', 'as a 12x12 convolution, forward + both gradients', both(dense_as_conv),
       (x2, w, dy3), options),
  ]
  checks = {'kernel gradient as 9 products': (kernel_gradient_by_products(x1, dy2),
                                              kernel_grad(conv, x1)(k2, dy2)),
            'Winograd forward': (winograd_conv(x1, k2), conv(x1, k2)),
            'dense as a convolution': (dense_as_conv(x2, w), dense(x2, w))}
  for name, (got, want) in checks.items():
    error = float(jnp.abs(got - want).max() / jnp.abs(want).max())
    print(f'{name}: largest difference {error:.1e} of the largest value')
    assert error < 1e-4, name
  print(f'\nbatch {n}, {jax.devices()[0].device_kind}, compiler options {options}')
  print('| layer | what | ms | GFLOP/s |\n|---|---|---|---|')
  for layer, what, fn, fn_args, fn_options in rows:
    ms = milliseconds(fn, fn_args, fn_options, args.repeats)
    passes = 3 if '+' in what else 1
    print(f'| {layer} | {what} | {ms:.1f} | {passes * layer_flops[layer] / ms / 1e6:.0f} |',
          flush=True)


if __name__ == '__main__':
  main()
