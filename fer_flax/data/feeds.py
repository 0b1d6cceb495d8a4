"""Where batches come from: tf.data on the host, or the data set held on the devices.

`config.data.pipeline` chooses: `tfds` (`tf_input`, the TFDS builder and tf.data) or `memory`
(`on_device`, no TensorFlow). Either way a training feed yields what the compiled train step takes,
batches stacked [steps, batch, ...] (several steps per call on the devices' input), and evaluation
batches carry a `mask` that is False on padding. This is the one place that imports TensorFlow,
and only for `tfds`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import jax
import ml_collections
from absl import logging

from fer_flax.core.errors import UserError
from fer_flax.core.mesh import Batch, Parallel
from fer_flax.data import augment, fer2013, on_device

PIPELINES = ('tfds', 'memory')


class TrainFeed(Protocol):
  """Training batches for a range of steps."""
  steps_per_epoch: int

  def batches(self, start_step: int, stop_step: int) -> Iterator[Batch]:
    """Stacked batches [steps, batch, ...] for these steps; a stack never crosses an epoch."""


def tensorflow_available() -> bool:
  """Whether TensorFlow and TFDS can be imported, without importing them."""
  return all(importlib.util.find_spec(name) is not None
             for name in ('tensorflow', 'tensorflow_datasets'))


def _check_name(pipeline: str) -> None:
  if pipeline not in PIPELINES:
    raise UserError(f'unknown input pipeline {pipeline!r} in config.data.pipeline; '
                    'choose tfds (tf.data) or memory (on the devices, no TensorFlow)')


def _check(pipeline: str) -> None:
  _check_name(pipeline)
  if pipeline == 'tfds' and not tensorflow_available():
    raise UserError('config.data.pipeline=tfds needs TensorFlow and tensorflow-datasets, which '
                    'cannot be imported here; add --config.data.pipeline=memory (no TensorFlow), '
                    'or install them')


def _process() -> dict[str, int]:
  return dict(process_index=jax.process_index(), process_count=jax.process_count())


def check_settings(config: ml_collections.ConfigDict) -> None:
  """The training input's settings that can be checked without the data or TensorFlow."""
  _check_name(config.data.pipeline)
  if config.data.pipeline == 'tfds' and config.steps_per_call != 1:
    raise UserError(f'config.steps_per_call={config.steps_per_call} needs the in-memory input: '
                    'add --config.data.pipeline=memory, or set steps_per_call to 1')
  if config.data.pipeline == 'tfds' and augment.alternates_flips(config.augment):
    raise UserError('config.augment.alternate_flips needs the in-memory input: add '
                    '--config.data.pipeline=memory, or set alternate_flips to False')


def _check_training(config: ml_collections.ConfigDict) -> None:
  """The training input's settings, checked before any data is opened."""
  _check(config.data.pipeline)
  check_settings(config)


def _open(config: ml_collections.ConfigDict, pipeline: str):
  """The data `pipeline` reads: a `fer2013.Source` (memory) or a prepared TFDS builder."""
  if pipeline == 'memory':
    return fer2013.Source(config.data.path)
  # TensorFlow loads here.
  from fer_flax.data import tfds_builder  # pylint: disable=g-import-not-at-top
  return tfds_builder.prepare(config.data.path, config.data.tfds_data_dir)


def _train_feed(config: ml_collections.ConfigDict, parallel: Parallel, data: Any) -> TrainFeed:
  if config.data.pipeline == 'memory':
    return on_device.DeviceFeed(*fer2013.load_split(data, config.data.train_split),
                               config.batch_size, config.seed, config.steps_per_call, parallel,
                               alternate_flips=augment.alternates_flips(config.augment))
  from fer_flax.data import tf_input  # pylint: disable=g-import-not-at-top
  return tf_input.TfFeed(
      tf_input.TrainData(data, config.data.train_split, config.batch_size, config.seed,
                               **_process()),
      parallel, config.data.prefetch)


def _eval_batches(config: ml_collections.ConfigDict, parallel: Parallel, split: str,
                  pipeline: str, data: Any) -> Iterable[Batch]:
  if pipeline == 'memory':
    images, labels = fer2013.load_split(data, split)
    return on_device.eval_batches(images, labels, config.eval_batch_size, parallel)
  from fer_flax.data import tf_input  # pylint: disable=g-import-not-at-top
  dataset, _ = tf_input.eval_data(data, split, config.eval_batch_size, **_process())
  return tf_input.EvalBatches(dataset, parallel)


def train_feed(config: ml_collections.ConfigDict, parallel: Parallel) -> TrainFeed:
  """The training feed `config.data.pipeline` names, over `config.data.train_split`."""
  _check_training(config)
  return _train_feed(config, parallel, _open(config, config.data.pipeline))


def train_and_eval(config: ml_collections.ConfigDict,
                   parallel: Parallel) -> tuple[TrainFeed, Iterable[Batch]]:
  """Training's feed and its evaluation batches (`config.data.eval_split`), from the data opened
  once."""
  _check_training(config)
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  data = _open(config, config.data.pipeline)
  return (_train_feed(config, parallel, data),
          _eval_batches(config, parallel, config.data.eval_split, config.data.pipeline, data))


def eval_pipeline(config: ml_collections.ConfigDict, requested: str | None = None) -> str:
  """The input for evaluating: `requested`, else the run's own, else (no TensorFlow) `memory`.

  Evaluation gives the same scores on either input; only where the data is read from differs.
  """
  if requested:
    _check(requested)
    return requested
  pipeline = config.data.pipeline
  if pipeline == 'tfds' and not tensorflow_available():
    logging.info('TensorFlow cannot be imported: evaluating on the in-memory input')
    return 'memory'
  _check(pipeline)
  return pipeline


def eval_batches(config: ml_collections.ConfigDict, parallel: Parallel, split: str | None = None,
                 pipeline: str | None = None) -> Iterable[Batch]:
  """One pass over `split` (default `config.data.eval_split`) each time it is iterated."""
  pipeline = eval_pipeline(config, pipeline)
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  return _eval_batches(config, parallel, split or config.data.eval_split, pipeline,
                       _open(config, pipeline))
