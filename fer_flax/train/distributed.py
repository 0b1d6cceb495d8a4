"""Several processes training one model on JAX's own runtime (Cloud TPU pods, multi-host GPUs).

Each process drives its own devices; `jax.distributed.initialize` connects them, after which the
mesh spans every process's devices and the compiled steps run as one program. The input is sharded
per process, metrics and summaries are written by process 0, and Orbax saves and restores
checkpoints with every process taking part.
"""

from __future__ import annotations

import os

import jax
import ml_collections
from absl import logging

from fer_flax.core.errors import UserError


def initialize(config: ml_collections.ConfigDict) -> None:
  """Joins the run's other processes when `config.distributed.initialize` is set.

  Must run before anything touches a device. Fields left unset come from the environment:
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, then JAX's own detection of
  Cloud TPU, SLURM, Open MPI and Kubernetes jobs.
  """
  settings = config.distributed
  if not settings.initialize or jax.distributed.is_initialized():
    return
  address = settings.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS') or None
  count = settings.num_processes or int(os.environ.get('JAX_NUM_PROCESSES', 0)) or None
  process_id = settings.process_id
  if process_id < 0:
    process_id = int(os.environ['JAX_PROCESS_ID']) if 'JAX_PROCESS_ID' in os.environ else None
  try:
    jax.distributed.initialize(address, count, process_id,
                               initialization_timeout=settings.timeout_seconds)
  except (ValueError, RuntimeError) as e:
    raise UserError(
        f'could not join the other processes ({str(e).splitlines()[0]}); set '
        '--config.distributed.coordinator_address=HOST:PORT (process 0\'s), num_processes and '
        'process_id, or --config.distributed.initialize=False for a single process') from e
  logging.info('Process %d of %d joined through %s; %d devices in all', jax.process_index(),
               jax.process_count(), address or 'auto-detection', jax.device_count())
