"""FER2013 held on the devices: the input path that needs no TensorFlow.

The dataset is small (28,709 x 48 x 48 bytes = 66 MB), so each split is decoded once with
`fer2013.Source`, sharded across the devices, and every batch is gathered inside the compiled
train step: no host round-trip per step and no tf.data. Each device shuffles its own shard once per
epoch with a key that depends only on (seed, epoch, device), so a run resumed at any step sees the
batches an uninterrupted run would. Augmentation happens in the train step, as for tf.data.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fer_flax import fer2013
from fer_flax.errors import UserError

Arrays = dict[str, jax.Array]


def load_split(source: fer2013.Source, split: str) -> tuple[np.ndarray, np.ndarray]:
  """([N, 48, 48, 1] uint8 images, [N] int32 labels) of `split`, decoded on the host."""
  sizes = source.split_sizes()
  if split not in sizes:
    raise UserError(f'split {split!r} is not in {source.path} (it has {", ".join(sizes)}); '
                    'choose one of those with --config.data.eval_split / '
                    '--config.data.train_split')
  images = np.empty((sizes[split], fer2013.IMAGE_SIZE, fer2013.IMAGE_SIZE, 1), np.uint8)
  labels = np.empty((sizes[split],), np.int32)
  for i, (record, image) in enumerate(source.examples(split)):
    images[i, ..., 0], labels[i] = image, record.label
  return images, labels


def _on_devices(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array every process holds, placed shard by shard on this process's devices."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


class TrainData:
  """A training split sharded over the `data` axis of `mesh`, and how to batch it on device.

  Device d owns examples [d * n, (d + 1) * n); the global batch is the devices' local batches side
  by side, each drawn from the device's own shard.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, global_batch_size: int, seed: int,
               mesh: Mesh):
    self.mesh = mesh
    num_devices = mesh.size
    self.device_batch_size = global_batch_size // num_devices
    self.per_device = len(images) // num_devices
    self.steps_per_epoch = self.per_device // self.device_batch_size
    if self.steps_per_epoch == 0:
      raise UserError(f'the training split has too few examples ({len(images)}) for one batch of '
                      f'config.batch_size={global_batch_size}; lower the batch size')
    used = self.per_device * num_devices
    sharding = NamedSharding(mesh, P('data'))
    self.arrays = {'image': _on_devices(images[:used], sharding),
                   'label': _on_devices(labels[:used], sharding)}
    self._permutation = jax.jit(jax.shard_map(
        self._local_permutation, mesh=mesh, in_specs=(P(), P()), out_specs=P('data')))
    self._seed = seed

  def _local_permutation(self, seed: jax.Array, epoch: jax.Array) -> jax.Array:
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), epoch),
                             jax.lax.axis_index('data'))
    return jax.random.permutation(key, self.per_device).astype(jnp.int32)

  def permutation(self, epoch: int) -> jax.Array:
    """Every device's order of its own examples in `epoch`, sharded like the data."""
    return self._permutation(jnp.uint32(self._seed), jnp.int32(epoch))

  def batch(self, arrays: Arrays, permutation: jax.Array, index: jax.Array) -> Arrays:
    """Batch `index` of the epoch that `permutation` orders; call it inside `jax.jit`."""
    size = self.device_batch_size

    def local(images, labels, order, index):
      rows = jax.lax.dynamic_slice_in_dim(order, index * size, size)
      return {'image': images[rows], 'label': labels[rows]}

    if self.mesh.size == 1:
      # The same gather without shard_map, which made XLA:CPU run the whole step ~50x slower.
      return local(arrays['image'], arrays['label'], permutation, index)
    return jax.shard_map(local, mesh=self.mesh, in_specs=(P('data'), P('data'), P('data'), P()),
                         out_specs=P('data'))(arrays['image'], arrays['label'], permutation, index)


def eval_batches(images: np.ndarray, labels: np.ndarray, global_batch_size: int,
                 sharding: NamedSharding) -> list[Arrays]:
  """One pass over a split as device-resident global batches; padding has mask False."""
  num_batches = math.ceil(len(images) / global_batch_size)
  padding = num_batches * global_batch_size - len(images)
  mask = np.concatenate([np.ones(len(images), bool), np.zeros(padding, bool)])
  images = np.concatenate([images, np.zeros((padding, *images.shape[1:]), images.dtype)])
  labels = np.concatenate([labels, np.zeros(padding, labels.dtype)])
  batches = []
  for start in range(0, len(images), global_batch_size):
    part = slice(start, start + global_batch_size)
    batches.append({'image': _on_devices(images[part], sharding),
                    'label': _on_devices(labels[part], sharding),
                    'mask': _on_devices(mask[part], sharding)})
  return batches
