"""Flax linen classifiers for 48x48 grayscale faces, chosen by name in the config.

The layers that XLA:CPU runs faster than the stock ones live in `fer_flax.models.layers`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fer_flax.core.errors import UserError
from fer_flax.core.mesh import cost_analysis
from fer_flax.data import fer2013
from fer_flax.models.layers import BatchNorm, Conv, max_pool_2x2
from fer_flax.models.whitening import PatchWhitening


def preprocess(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 [0, 255] images, as stored, to the float32 [0, 1] the models take."""
  return images.astype(jnp.float32) / 255.0


def _batch_norm(train: bool, dtype: Any) -> functools.partial:
  """The batch norm every zoo model uses: batch statistics in training, running ones otherwise."""
  return functools.partial(BatchNorm, use_running_average=not train, momentum=0.9, dtype=dtype)


def dirac_init() -> nn.initializers.Initializer:
  """The convolutions' LeCun-normal initialisation, with the first min(in, out) filters of a
  [kh, kw, in, out] kernel the identity ("dirac"; airbench, Jordan 2024): each convolution starts
  by passing its input through."""
  base = nn.initializers.lecun_normal()

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    kernel = base(key, shape, dtype)
    kh, kw, fan_in, fan_out = shape
    n = min(fan_in, fan_out)
    identity = jnp.zeros((kh, kw, n, n), dtype).at[kh // 2, kw // 2].set(jnp.eye(n, dtype=dtype))
    return kernel.at[:, :, :n, :n].set(identity)

  return init


def _bins(n: int, size: int) -> np.ndarray:
  """[size, n]: row i averages input cells floor(i n / size) to ceil((i + 1) n / size) - 1."""
  weights = np.zeros((size, n), np.float32)
  for i in range(size):
    start, stop = i * n // size, -(-(i + 1) * n // size)
    weights[i, start:stop] = 1 / (stop - start)
  return weights


def flatten_grid(x: jnp.ndarray, num_pools: int) -> jnp.ndarray:
  """[B, H, W, C] features flattened from the grid a 48x48 face leaves after `num_pools` 2x2 pools.

  A smaller face's grid is first average-pooled onto that one (PyTorch's AdaptiveAvgPool2d bins),
  so that a flattening head also takes the smaller faces of progressive resizing; at 48x48 this
  is the plain flatten, and the model, its checkpoints and exports stay as they were.
  """
  size = fer2013.IMAGE_SIZE >> num_pools  # each pool halves, dropping an odd row
  b, h, w, _ = x.shape
  if (h, w) != (size, size):
    x = jnp.einsum('ih,jw,bhwc->bijc', _bins(h, size), _bins(w, size), x).astype(x.dtype)
  return x.reshape((b, -1))


def _layers(dtype: Any) -> tuple[functools.partial, functools.partial]:
  """Conv and Dense computing in `dtype` (bfloat16 on accelerators) on float32 parameters."""
  return functools.partial(Conv, dtype=dtype), functools.partial(nn.Dense, dtype=dtype)


class SeedCNN(nn.Module):
  """The original project's network, layer for layer (9,515,783 parameters by default).

  Conv 64 -> MaxPool 2 -> Conv 128 -> MaxPool 2 -> Flatten -> Dense 512 -> Dropout -> Dense 7.
  The widths are fields only so that tests can run a small copy.
  """
  num_classes: int = fer2013.NUM_CLASSES
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
    x = flatten_grid(x, len(self.features))
    x = nn.relu(dense(self.hidden)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes)(x).astype(jnp.float32)


class VGG(nn.Module):
  """VGG-style stages of 3x3 convolutions with batch norm, as in the VGG variants that hold the
  published single-network FER2013 results; each stage ends in a 2x2 max pool.

  The fast-training options (airbench's): `whiten` > 0 puts a frozen `whiten` x `whiten` patch-
  whitening layer first; `dirac_init` starts each convolution as the identity; `norm_scale=False`
  leaves batch norm without a learned scale. `head_norm` puts batch norm (`DenseNorm_i`) between
  each hidden dense layer and its ReLU, which keeps its units from dying at high learning rates.
  """
  num_classes: int = fer2013.NUM_CLASSES
  stages: Sequence[Sequence[int]] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512))
  hidden: Sequence[int] = (1024, 1024)
  dropout_rate: float = 0.3
  dtype: Any = jnp.float32
  whiten: int = 0
  dirac_init: bool = False
  norm_scale: bool = True
  head_norm: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    norm = functools.partial(_batch_norm(train, self.dtype), use_scale=self.norm_scale)
    conv, dense = _layers(self.dtype)
    if self.dirac_init:
      conv = functools.partial(conv, kernel_init=dirac_init())
    x = x.astype(self.dtype)
    if self.whiten:
      x = nn.relu(PatchWhitening(self.whiten, dtype=self.dtype)(x))
    for stage in self.stages:
      for width in stage:
        x = nn.relu(norm()(conv(width, (3, 3), padding='SAME', use_bias=False)(x)))
      x = max_pool_2x2(x)
    x = flatten_grid(x, len(self.stages))
    for i, width in enumerate(self.hidden):
      x = dense(width, use_bias=not self.head_norm)(x)
      if self.head_norm:
        x = norm(name=f'DenseNorm_{i}')(x)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
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
  num_classes: int = fer2013.NUM_CLASSES
  blocks: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    conv, dense = _layers(self.dtype)
    x = conv(self.widths[0], (3, 3), padding='SAME', use_bias=False)(x.astype(self.dtype))
    x = nn.relu(_batch_norm(train, self.dtype)()(x))
    for stage, (num_blocks, width) in enumerate(zip(self.blocks, self.widths, strict=True)):
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
  num_classes: int = fer2013.NUM_CLASSES
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
    for width, stride in zip(self.widths, self.strides, strict=True):
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


# Dataclass fields of a model that its config does not set.
_NOT_CONFIG_FIELDS = frozenset({'parent', 'name', 'num_classes'})


def _module(cls: Any) -> type[nn.Module]:
  """The module class behind an entry of `MODELS`."""
  return cls.func if isinstance(cls, functools.partial) else cls


def field_defaults(name: str) -> dict[str, Any]:
  """The value each field of model `name` takes when a config leaves it out: what a run made
  before the field existed was built with."""
  cls = MODELS[name]
  defaults = {f.name: f.default for f in dataclasses.fields(_module(cls))
              if f.default is not dataclasses.MISSING and f.name not in _NOT_CONFIG_FIELDS}
  return {**defaults, **(cls.keywords if isinstance(cls, functools.partial) else {})}


def create_model(model_config: ml_collections.ConfigDict,
                 num_classes: int = fer2013.NUM_CLASSES) -> nn.Module:
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
  fields = set(_module(cls).__dataclass_fields__) - _NOT_CONFIG_FIELDS
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise UserError(f'config.model.{unknown[0]} is not a field of model {name!r}; its fields are '
                    f'{", ".join(sorted(fields))}')
  return cls(num_classes=num_classes, **kwargs)


def count_parameters(params: Any) -> int:
  """How many numbers a parameter tree holds."""
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def describe(model: nn.Module, image_size: int = fer2013.IMAGE_SIZE) -> tuple[int, float]:
  """(parameters, forward FLOPs per image as XLA counts them) of a model in eval mode."""
  x = jnp.zeros((1, image_size, image_size, 1), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  params = count_parameters(variables['params'])
  lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x)
  return params, float(cost_analysis(lowered)['flops'])

