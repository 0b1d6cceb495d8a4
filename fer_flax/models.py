"""Flax linen classifiers for 48x48 grayscale faces, chosen by name in the config."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from fer_flax.errors import UserError


def preprocess(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 [0, 255] images, as stored, to the float32 [0, 1] the models take."""
  return images.astype(jnp.float32) / 255.0


class SeedCNN(nn.Module):
  """The original project's network, layer for layer (9,515,783 parameters by default).

  Conv 64 -> MaxPool 2 -> Conv 128 -> MaxPool 2 -> Flatten -> Dense 512 -> Dropout -> Dense 7.
  The widths are fields only so that tests can run a small copy.
  """
  num_classes: int = 7
  features: Sequence[int] = (64, 128)
  hidden: int = 512
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    for width in self.features:
      x = nn.relu(nn.Conv(width, (3, 3), padding='SAME')(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


MODELS = {'seed_cnn': SeedCNN}


def create_model(model_config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Builds `model_config.name` with the config's other fields as its arguments."""
  name = model_config.get('name')
  if name not in MODELS:
    raise UserError(f'unknown model {name!r} in config.model.name; choose one of '
                    f'{", ".join(sorted(MODELS))}')
  cls = MODELS[name]
  kwargs = {k: v for k, v in model_config.items() if k != 'name'}
  fields = set(cls.__dataclass_fields__) - {'parent', 'name', 'num_classes'}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise UserError(f'config.model.{unknown[0]} is not a field of model {name!r}; its fields are '
                    f'{", ".join(sorted(fields))}')
  return cls(num_classes=num_classes, **kwargs)
