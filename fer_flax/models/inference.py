"""The one way a model is applied to faces: uint8 faces in, preprocessing, the model in eval mode,
and test-time augmentation. Evaluation, prediction and every export go through here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fer_flax.data import augment
from fer_flax.models.architectures import preprocess


def logits(apply_fn: Callable, variables: dict[str, Any], images: jax.Array) -> jax.Array:
  """[N, classes] logits of uint8 faces [N, 48, 48, 1]."""
  return apply_fn(variables, preprocess(images), train=False)


def log_probabilities(apply_fn: Callable, variables: dict[str, Any], images: jax.Array,
                      tta: str = 'none') -> jax.Array:
  """[N, classes] log-probabilities of uint8 faces, averaged in probability over TTA views."""
  views = augment.tta_views(preprocess(images), tta)
  num_views, batch_size = views.shape[:2]
  # A face's views side by side ([N * V] rows, face-major) stay on the device that holds the face;
  # folding the view axis into a sharded batch axis would have every device evaluate every view
  # of the whole batch.
  rows = jnp.swapaxes(views, 0, 1).reshape(-1, *views.shape[2:])
  log_probs = jax.nn.log_softmax(apply_fn(variables, rows, train=False))
  log_probs = log_probs.reshape(batch_size, num_views, -1)
  return jax.nn.logsumexp(log_probs, axis=1) - jnp.log(num_views)


def probabilities(apply_fn: Callable, variables: dict[str, Any], images: jax.Array,
                  tta: str = 'none') -> jax.Array:
  """[N, classes] probabilities of uint8 faces (averaged over TTA views)."""
  return jnp.exp(log_probabilities(apply_fn, variables, images, tta))
