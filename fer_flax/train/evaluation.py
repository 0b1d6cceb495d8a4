"""The one evaluation path, for the training loop and `python -m fer_flax.evaluate` alike:
every example of a split through the compiled evaluation step, then the scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
import numpy as np

from fer_flax import models
from fer_flax.core.mesh import Batch, Parallel
from fer_flax.data import feeds, fer2013
from fer_flax.train import report, step_fns


def predictions(eval_step: Callable, variables: dict[str, Any],
                batches: Iterable[Batch]) -> tuple[np.ndarray, np.ndarray]:
  """([N, classes] probabilities, [N] labels) of every example (padding dropped) of `batches`."""
  outputs = jax.device_get([eval_step(variables, batch) for batch in batches])
  joined = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
  mask = joined['mask'].astype(bool)
  return joined['probabilities'][mask], joined['label'][mask]


def score(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
  """Loss (mean negative log-likelihood), accuracy and the classification report."""
  confusion = np.zeros((fer2013.NUM_CLASSES, fer2013.NUM_CLASSES), np.int64)
  np.add.at(confusion, (labels, probs.argmax(-1)), 1)
  picked = probs[np.arange(len(labels)), labels]
  loss = float(-np.log(np.maximum(picked, np.finfo(np.float32).tiny)).mean())
  return {'examples': int(len(labels)), 'loss': loss,
          **report.classification_report(confusion, fer2013.EMOTIONS)}


def _with_data(config: ml_collections.ConfigDict, data: str | None,
               tfds_data_dir: str | None) -> ml_collections.ConfigDict:
  """The run's config, reading the data from where this command was told it is."""
  config = ml_collections.ConfigDict(config.to_dict())
  if data:
    config.data.path = data
  if tfds_data_dir is not None:
    config.data.tfds_data_dir = tfds_data_dir
  return config


def probabilities(config: ml_collections.ConfigDict, variables: dict[str, Any], split: str,
                  data: str | None = None, tfds_data_dir: str | None = None,
                  tta: str = 'none', pipeline: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """([N, classes] probabilities, [N] labels) of model variables trained with `config`."""
  config = _with_data(config, data, tfds_data_dir)
  parallel = Parallel()
  batches = feeds.eval_batches(config, parallel, split, pipeline)
  eval_step = step_fns.compile_eval_step(models.create_model(config.model).apply, parallel, tta)
  return predictions(eval_step, jax.device_put(variables, parallel.replicated), batches)


def evaluate_variables(config: ml_collections.ConfigDict, variables: dict[str, Any], split: str,
                   data: str | None = None, tfds_data_dir: str | None = None,
                   tta: str = 'none', pipeline: str | None = None) -> dict[str, Any]:
  """Scores model variables trained with `config` on `split`; returns the full report."""
  probs, labels = probabilities(config, variables, split, data, tfds_data_dir, tta, pipeline)
  return {'split': split, 'tta': tta, **score(probs, labels)}
