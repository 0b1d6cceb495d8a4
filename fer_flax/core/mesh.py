"""The device mesh, the shardings on it, and compiling for it.

Parameters are replicated and batches sharded over a 1-D `data` mesh of every device; `jax.jit`
inserts the gradient all-reduce (the JAX docs recommend this over `pmap`, now in maintenance).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fer_flax.core.errors import UserError

Batch = dict[str, jax.Array]


def full_batches(num_examples: int, global_batch_size: int, num_shards: int) -> int:
  """Full global batches in an epoch whose `num_shards` shards (devices or processes) each batch
  only their own equal share of the examples."""
  return (num_examples // num_shards) // (global_batch_size // num_shards)


def cost_analysis(program: Any) -> dict[str, float]:
  """XLA's cost analysis of a lowered or compiled program as one dict (FLOPs, bytes accessed);
  JAX versions differ in giving a dict or a list of one."""
  cost = program.cost_analysis() or {}
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return cost


class Parallel:
  """The mesh of `devices` (default: all of them), its shardings, and `jit` for it.

  `data` shards a batch's leading axis; `stacked` shards the second axis of batches stacked
  [steps, batch, ...] for several steps per compiled call.
  """

  def __init__(self, devices: list[jax.Device] | None = None,
               cpu_compiler_options: dict[str, Any] | None = None):
    self.mesh = Mesh(np.asarray(devices or jax.devices()), ('data',))
    self.replicated = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P('data'))
    self.stacked = NamedSharding(self.mesh, P(None, 'data'))
    self.on_cpu = self.mesh.devices.flat[0].platform == 'cpu'
    self.compiler_options = dict(cpu_compiler_options or {}) if self.on_cpu else {}

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  def jit(self, fn: Callable, **kwargs: Any) -> Callable:
    """`jax.jit`, with the config's XLA options when compiling for CPUs."""
    return jax.jit(fn, compiler_options=self.compiler_options or None, **kwargs)

  def replicate(self, make: Callable[[], Any]) -> Any:
    """`make()`'s value on every device, from a compiled call: `device_put` cannot place a host
    value on other processes' devices."""
    return self.jit(make, out_shardings=self.replicated)()

  def check_batch_size(self, batch_size: int, field: str) -> None:
    if batch_size % self.num_devices:
      raise UserError(f'config.{field}={batch_size} is not divisible by the {self.num_devices} '
                      f'devices; use a multiple of {self.num_devices}')

  def to_global(self, local_batch: dict[str, np.ndarray],
                sharding: NamedSharding | None = None) -> Batch:
    """Assembles every process's local batch into one global batch sharded over the mesh."""
    sharding = sharding or self.data
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                        local_batch)

  def prefetch(self, batches: Iterable[dict[str, np.ndarray]], size: int,
               sharding: NamedSharding | None = None) -> Iterator[Batch]:
    """Keeps `size` batches in flight to the devices while the current one computes."""
    queue = collections.deque()
    for batch in batches:
      queue.append(self.to_global(batch, sharding))
      if len(queue) > size:
        yield queue.popleft()
    yield from queue
