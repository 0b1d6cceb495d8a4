"""FER2013 held on the devices: the input that needs no TensorFlow.

The dataset is small (28,709 x 48 x 48 bytes = 66 MB), so each split is decoded once with
`fer2013.Source` and sharded across the devices; each call's batches are gathered there, with no
host round-trip and no tf.data. Each device shuffles its own shard once per epoch with a key that
depends only on (seed, epoch, device), so a run resumed at any step sees the batches an
uninterrupted run would. Augmentation happens in the train step, as for tf.data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fer_flax.core.errors import UserError
from fer_flax.core.mesh import Batch, Parallel, full_batches
from fer_flax.core.padding import pad_rows


def _on_devices(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array every process holds, placed shard by shard on this process's devices."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def permutation_program(mesh: jax.sharding.Mesh, per_device: int) -> Callable:
  """Compiled `(seed, epoch) -> order`: each device's shuffle of its own `per_device` examples,
  from a key that depends only on (seed, epoch, device)."""

  def local(seed, epoch):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), epoch),
                             jax.lax.axis_index('data'))
    return jax.random.permutation(key, per_device).astype(jnp.int32)

  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P()), out_specs=P('data')))


def gather_program(mesh: jax.sharding.Mesh, device_batch_size: int) -> Callable:
  """Compiled `(arrays, order, index, num_steps) -> batches`: each device gathers batches `index`
  to `index + num_steps` of its own examples in `order`, stacked [steps, batch, ...]; `num_steps`
  is static."""

  def local(arrays, order, index, num_steps):
    rows = jax.lax.dynamic_slice_in_dim(order, index * device_batch_size,
                                        num_steps * device_batch_size)
    rows = rows.reshape(num_steps, device_batch_size)
    return {k: v[rows] for k, v in arrays.items()}

  def gather(arrays, order, index, num_steps):
    return jax.shard_map(functools.partial(local, num_steps=num_steps), mesh=mesh,
                         in_specs=(P('data'), P('data'), P()),
                         out_specs=P(None, 'data'))(arrays, order, index)

  return jax.jit(gather, static_argnums=3)


def call_lengths(steps_per_epoch: int, steps_per_call: int) -> list[int]:
  """The distinct numbers of steps the calls of an epoch take (each compiles its own program)."""
  full = min(steps_per_call, steps_per_epoch)
  return [full] + ([steps_per_epoch % full] if steps_per_epoch % full else [])


class DeviceFeed:
  """A training split sharded over the mesh, yielding `steps_per_call` batches at a time.

  Device d owns examples [d * n, (d + 1) * n); the global batch is the devices' local batches side
  by side, each drawn from the device's own shard. With `alternate_flips` each batch also says
  which faces to mirror (`flip`): a coin drawn once per face (from the seed) in epoch 0, the
  other side in epoch 1, and so on, so that every face is seen both ways every two epochs.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, global_batch_size: int, seed: int,
               steps_per_call: int, parallel: Parallel, alternate_flips: bool = False):
    if steps_per_call < 1:
      raise UserError(f'config.steps_per_call={steps_per_call}; use 1 or more')
    mesh = parallel.mesh
    self.per_device = len(images) // mesh.size
    self.steps_per_epoch = full_batches(len(images), global_batch_size, mesh.size)
    if self.steps_per_epoch == 0:
      raise UserError(f'the training split has too few examples ({len(images)}) for one batch of '
                      f'config.batch_size={global_batch_size}; lower the batch size')
    used = self.per_device * mesh.size
    self.arrays = {'image': _on_devices(images[:used], parallel.data),
                   'label': _on_devices(labels[:used], parallel.data)}
    if alternate_flips:
      first_sides = np.random.default_rng(seed).integers(0, 2, used).astype(bool)
      self.arrays['flip'] = _on_devices(first_sides, parallel.data)
    self.steps_per_call = steps_per_call
    self._seed = seed
    self._permutation = permutation_program(mesh, self.per_device)
    self._gather = gather_program(mesh, global_batch_size // mesh.size)

  def permutation(self, epoch: int) -> jax.Array:
    """Every device's order of its own examples in `epoch`, sharded like the data."""
    return self._permutation(jnp.uint32(self._seed), jnp.int32(epoch))

  def epoch_arrays(self, epoch: int) -> dict[str, jax.Array]:
    """The split as `epoch` sees it: with alternating flips, each face's side for the epoch."""
    if 'flip' not in self.arrays or epoch % 2 == 0:
      return self.arrays
    return {**self.arrays, 'flip': ~self.arrays['flip']}

  def gather(self, permutation: jax.Array, index: int, num_steps: int, epoch: int = 0) -> Batch:
    """Batches `index` to `index + num_steps` of the epoch `permutation` orders, stacked."""
    return self._gather(self.epoch_arrays(epoch), permutation, jnp.int32(index), num_steps)

  def batches(self, start_step: int, stop_step: int) -> Iterator[Batch]:
    """Stacked batches for the steps from `start_step` to `stop_step`, never across an epoch."""
    step = start_step
    while step < stop_step:
      epoch, index = divmod(step, self.steps_per_epoch)
      permutation, arrays = self.permutation(epoch), self.epoch_arrays(epoch)
      while index < self.steps_per_epoch and step < stop_step:
        num_steps = min(self.steps_per_call, self.steps_per_epoch - index, stop_step - step)
        yield self._gather(arrays, permutation, jnp.int32(index), num_steps)
        index, step = index + num_steps, step + num_steps


def eval_batches(images: np.ndarray, labels: np.ndarray, global_batch_size: int,
                 parallel: Parallel) -> list[Batch]:
  """One pass over a split as device-resident global batches; padding has mask False."""
  mask = pad_rows(np.ones(len(images), bool), global_batch_size)
  images, labels = (pad_rows(a, global_batch_size) for a in (images, labels))
  batches = []
  for start in range(0, len(images), global_batch_size):
    part = slice(start, start + global_batch_size)
    batches.append({'image': _on_devices(images[part], parallel.data),
                    'label': _on_devices(labels[part], parallel.data),
                    'mask': _on_devices(mask[part], parallel.data)})
  return batches
