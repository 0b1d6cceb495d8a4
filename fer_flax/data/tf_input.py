"""tf.data input for training and evaluation, sharded per process.

Each process reads its own slice of a split. Training shuffles each epoch with a seed derived from
(seed, epoch), so a run resumed at any step sees exactly the batches an uninterrupted run would.
Evaluation pads every process to the same number of batches and marks padding with `mask`, so each
example counts exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from fer_flax.core.errors import UserError
from fer_flax.core.mesh import Batch as DeviceBatch
from fer_flax.core.mesh import Parallel, full_batches

# The accelerators belong to JAX; tf.data runs on the host.
tf.config.set_visible_devices([], 'GPU')

Batch = dict[str, np.ndarray]


def _features(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {'image': example['image'], 'label': tf.cast(example['label'], tf.int32)}


def num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  """Examples in `split`; a split the data lacks is a UserError listing the ones it has."""
  splits = builder.info.splits
  if split not in splits:
    raise UserError(f'split {split!r} is not in the prepared FER2013 data at {builder.data_dir} '
                    f'(it has {", ".join(sorted(splits))}); choose one of those with '
                    '--config.data.eval_split / --config.data.train_split, or evaluate --split')
  return splits[split].num_examples


def _local_batch_size(global_batch_size: int, process_count: int, field: str) -> int:
  if global_batch_size % process_count:
    raise UserError(f'config.{field}={global_batch_size} is not divisible by the {process_count} '
                    f'processes; use a multiple of {process_count}')
  return global_batch_size // process_count


class TrainData:
  """Training batches of one process, `steps_per_epoch` full batches per epoch."""

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str, global_batch_size: int,
               seed: int, process_index: int, process_count: int):
    self.local_batch_size = _local_batch_size(global_batch_size, process_count, 'batch_size')
    total = num_examples(builder, split)
    self._local_examples = total // process_count
    self.steps_per_epoch = full_batches(total, global_batch_size, process_count)
    if self.steps_per_epoch == 0:
      raise UserError(f'split {split!r} has too few examples for one batch of config.batch_size='
                      f'{global_batch_size}; lower the batch size')
    local_split = tfds.even_splits(split, n=process_count, drop_remainder=True)[process_index]
    self._seed = seed
    self._ds = builder.as_dataset(split=local_split, shuffle_files=False).map(
        _features, num_parallel_calls=tf.data.AUTOTUNE).cache()

  def epoch(self, epoch: int) -> tf.data.Dataset:
    """The batches of one epoch, shuffled by a seed that depends only on (seed, epoch)."""
    epoch_seed = int(np.random.SeedSequence([self._seed, epoch]).generate_state(1)[0])
    return (self._ds.shuffle(self._local_examples, seed=epoch_seed, reshuffle_each_iteration=False)
            .batch(self.local_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

  def iterate(self, start_step: int = 0) -> Iterator[Batch]:
    """Endless batches, starting where a run at `start_step` would be."""
    epoch, offset = divmod(start_step, self.steps_per_epoch)
    while True:
      yield from self.epoch(epoch).skip(offset).as_numpy_iterator()
      epoch, offset = epoch + 1, 0


class TfFeed:
  """tf.data batches placed on the mesh, one step's batch per compiled call."""

  def __init__(self, data: TrainData, parallel: Parallel, prefetch: int):
    self.steps_per_epoch = data.steps_per_epoch
    self.data, self._parallel, self._prefetch = data, parallel, prefetch

  def batches(self, start_step: int, stop_step: int) -> Iterator[DeviceBatch]:
    """[1, batch, ...] batches for the steps from `start_step` to `stop_step`."""
    host = self.data.iterate(start_step)
    stacked = ({k: v[None] for k, v in next(host).items()} for _ in range(start_step, stop_step))
    return self._parallel.prefetch(stacked, self._prefetch, self._parallel.stacked)


class EvalBatches:
  """One pass over an evaluation split each time it is iterated, as global device batches."""

  def __init__(self, dataset: tf.data.Dataset, parallel: Parallel):
    self._dataset, self._parallel = dataset, parallel

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return map(self._parallel.to_global, self._dataset.as_numpy_iterator())


def eval_data(builder: tfds.core.DatasetBuilder, split: str, global_batch_size: int,
              process_index: int, process_count: int) -> tuple[tf.data.Dataset, int]:
  """One pass over `split` for this process, padded and masked; returns (dataset, num_batches).

  Every process gets the same number of batches (collectives need it); padding has mask False.
  """
  local_batch = _local_batch_size(global_batch_size, process_count, 'eval_batch_size')
  total = num_examples(builder, split)
  num_batches = math.ceil(math.ceil(total / process_count) / local_batch)
  local_split = tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]
  ds = builder.as_dataset(split=local_split, shuffle_files=False).map(
      lambda ex: {**_features(ex), 'mask': tf.constant(True)}, num_parallel_calls=tf.data.AUTOTUNE)
  padding = tf.data.Dataset.from_tensors({
      'image': tf.zeros(ds.element_spec['image'].shape, tf.uint8),
      'label': tf.constant(0, tf.int32),
      'mask': tf.constant(False),
  }).repeat()
  ds = ds.concatenate(padding).take(num_batches * local_batch).batch(local_batch)
  return ds.cache().prefetch(tf.data.AUTOTUNE), num_batches
