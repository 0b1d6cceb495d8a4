"""Flax linen classifiers for 48x48 grayscale faces, chosen by name in the config.

  python -m fer_flax.models      # parameters and FLOPs per image of every model
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fer_flax.errors import UserError


def preprocess(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 [0, 255] images, as stored, to the float32 [0, 1] the models take."""
  return images.astype(jnp.float32) / 255.0


def _pool_windows(x: jnp.ndarray) -> jnp.ndarray:
  """[B, H, W, C] -> [B, H/2, 2, W/2, 2, C]; an odd last row or column is dropped, as VALID does."""
  b, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """`nn.max_pool(x, (2, 2), strides=(2, 2))`: the same values and the same gradients, faster.

  XLA:CPU differentiates `reduce_window` with `select_and_scatter`, which took 170 ms of a 334 ms
  seed_cnn step on a 2-core CPU; this gradient is one elementwise pass (18 ms) that, like
  select_and_scatter, gives each window's gradient to its first maximum in row-major order.
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


_NHWC = ('NHWC', 'HWIO', 'NHWC')


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
  """A 2-D NHWC convolution; a unit-stride one on few input channels gets the patch gradient.

  For the grayscale input (1 channel), XLA:CPU's kernel gradient took 17 ms of a seed_cnn step;
  one matrix product of the input's 3x3 patches with the output gradient takes 4.
  """
  kh, kw, in_features, _ = kernel.shape
  if strides == (1, 1) and feature_group_count == 1 and kh * kw * in_features <= 32:
    pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (1, 1), padding)
    return _patch_conv(x, kernel, tuple(tuple(p) for p in pads))
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC,
                                      feature_group_count=feature_group_count)


def sum_over_leading_axes(x: jnp.ndarray) -> jnp.ndarray:
  """`x.sum(axis=all but the last)`, as a wide reduction and a narrow one.

  XLA:CPU reduces [N, C] to [C] slowly when C is small: 27 ms for a [64, 48, 48, 64] gradient,
  against 1 ms summed as [N/8, 8C] and then [8, C].
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


class Conv(nn.Module):
  """`nn.Conv` for NHWC images, with its parameters (names, shapes, initialisation), that XLA:CPU
  differentiates faster: the bias and first-layer kernel gradients above."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: str = 'SAME'
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    in_features = x.shape[-1] // self.feature_group_count
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (*self.kernel_size, in_features, self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    y = _conv(x, kernel, (self.strides, self.strides), self.padding, self.feature_group_count)
    if not self.use_bias:
      return y
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return y + broadcast_channels(bias.astype(self.dtype), y.shape)


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over all but the channel axis, with its variables and values, whose batch
  statistics and gradients XLA:CPU reduces fast (`sum_over_leading_axes`): with `nn.BatchNorm`,
  its column reductions took about a third of a `configs/cpu.py` step."""
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  scale_init: Callable = nn.initializers.ones_init()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    features = x.shape[-1]
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (features,), jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
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


def _batch_norm(train: bool, dtype: Any) -> functools.partial:
  """The batch norm every zoo model uses: batch statistics in training, running ones otherwise."""
  return functools.partial(BatchNorm, use_running_average=not train, momentum=0.9, dtype=dtype)


def _layers(dtype: Any) -> tuple[functools.partial, functools.partial]:
  """Conv and Dense computing in `dtype` (bfloat16 on accelerators) on float32 parameters."""
  return functools.partial(Conv, dtype=dtype), functools.partial(nn.Dense, dtype=dtype)


class SeedCNN(nn.Module):
  """The original project's network, layer for layer (9,515,783 parameters by default).

  Conv 64 -> MaxPool 2 -> Conv 128 -> MaxPool 2 -> Flatten -> Dense 512 -> Dropout -> Dense 7.
  The widths are fields only so that tests can run a small copy.
  """
  num_classes: int = 7
  features: Sequence[int] = (64, 128)
  hidden: int = 512
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    conv, dense = _layers(self.dtype)
    x = x.astype(self.dtype)
    for width in self.features:
      x = nn.relu(conv(width, (3, 3), padding='SAME')(x))
      x = max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(dense(self.hidden)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes)(x).astype(jnp.float32)


class VGG(nn.Module):
  """VGG-style stages of 3x3 convolutions with batch norm, as in the VGG variants that hold the
  published single-network FER2013 results; each stage ends in a 2x2 max pool."""
  num_classes: int = 7
  stages: Sequence[Sequence[int]] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512))
  hidden: Sequence[int] = (1024, 1024)
  dropout_rate: float = 0.3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    norm, (conv, dense) = _batch_norm(train, self.dtype), _layers(self.dtype)
    x = x.astype(self.dtype)
    for stage in self.stages:
      for width in stage:
        x = nn.relu(norm()(conv(width, (3, 3), padding='SAME', use_bias=False)(x)))
      x = max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(dense(width)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes)(x).astype(jnp.float32)


class ResidualBlock(nn.Module):
  """The basic two-convolution block of ResNet-18/34."""
  width: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    norm, (conv, _) = _batch_norm(train, self.dtype), _layers(self.dtype)
    y = conv(self.width, (3, 3), strides=self.strides, padding='SAME', use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = conv(self.width, (3, 3), padding='SAME', use_bias=False)(y)
    y = norm(scale_init=nn.initializers.zeros)(y)  # Each block starts as the identity.
    if x.shape != y.shape:
      x = norm()(conv(self.width, (1, 1), strides=self.strides, use_bias=False)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet-18/34 with a stem for 48x48 faces: one 3x3 convolution, no stride, no max pool."""
  num_classes: int = 7
  blocks: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    conv, dense = _layers(self.dtype)
    x = conv(self.widths[0], (3, 3), padding='SAME', use_bias=False)(x.astype(self.dtype))
    x = nn.relu(_batch_norm(train, self.dtype)()(x))
    for stage, (num_blocks, width) in enumerate(zip(self.blocks, self.widths)):
      for block in range(num_blocks):
        x = ResidualBlock(width, strides=2 if stage > 0 and block == 0 else 1,
                          dtype=self.dtype)(x, train=train)
    x = x.mean(axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes)(x).astype(jnp.float32)


class SeparableBlock(nn.Module):
  """Depthwise 3x3 then pointwise 1x1 convolution, each with batch norm and ReLU."""
  width: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    norm, (conv, _) = _batch_norm(train, self.dtype), _layers(self.dtype)
    x = conv(x.shape[-1], (3, 3), strides=self.strides, padding='SAME',
             feature_group_count=x.shape[-1], use_bias=False)(x)
    x = nn.relu(norm()(x))
    return nn.relu(norm()(conv(self.width, (1, 1), use_bias=False)(x)))


class CompactCNN(nn.Module):
  """A small depthwise-separable network for CPUs and phones (about 0.3M parameters)."""
  num_classes: int = 7
  stem_width: int = 32
  widths: Sequence[int] = (64, 128, 128, 256, 256, 256, 256)
  strides: Sequence[int] = (1, 2, 1, 2, 1, 2, 1)
  dropout_rate: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    conv, dense = _layers(self.dtype)
    x = conv(self.stem_width, (3, 3), padding='SAME', use_bias=False)(x.astype(self.dtype))
    x = nn.relu(_batch_norm(train, self.dtype)()(x))
    for width, stride in zip(self.widths, self.strides):
      x = SeparableBlock(width, stride, dtype=self.dtype)(x, train=train)
    x = x.mean(axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes)(x).astype(jnp.float32)


MODELS = {
    'seed_cnn': SeedCNN,
    'vgg': VGG,
    'resnet18': functools.partial(ResNet, blocks=(2, 2, 2, 2)),
    'resnet34': functools.partial(ResNet, blocks=(3, 4, 6, 3)),
    'compact': CompactCNN,
}


def create_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds `model_config.name` with the config's other fields as its arguments."""
  name = model_config.get('name')
  if name not in MODELS:
    raise UserError(f'unknown model {name!r} in config.model.name; choose one of '
                    f'{", ".join(sorted(MODELS))}')
  cls = MODELS[name]
  kwargs = {k: v for k, v in model_config.items() if k != 'name'}
  if 'dtype' in kwargs:
    if kwargs['dtype'] not in ('float32', 'bfloat16'):
      raise UserError(f'config.model.dtype={kwargs["dtype"]!r} is not a compute dtype; choose '
                      'float32, or bfloat16 on accelerators')
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  module = cls.func if isinstance(cls, functools.partial) else cls
  fields = set(module.__dataclass_fields__) - {'parent', 'name', 'num_classes'}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise UserError(f'config.model.{unknown[0]} is not a field of model {name!r}; its fields are '
                    f'{", ".join(sorted(fields))}')
  return cls(num_classes=num_classes, **kwargs)


def describe(model: nn.Module, image_size: int = 48) -> tuple[int, float]:
  """(parameters, forward FLOPs per image as XLA counts them) of a model in eval mode."""
  x = jnp.zeros((1, image_size, image_size, 1), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  params = sum(v.size for v in jax.tree.leaves(variables['params']))
  lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x)
  return params, float(lowered.cost_analysis()['flops'])


if __name__ == '__main__':
  print(f'{"model":10s} {"parameters":>12s} {"MFLOPs/image":>13s}')
  for model_name in MODELS:
    count, flops = describe(create_model(ml_collections.ConfigDict({'name': model_name}), 7))
    print(f'{model_name:10s} {count:12,d} {flops / 1e6:13.1f}')
