"""Accelerator chips from their datasheets, and Cloud TPU slices by the names Cloud TPU gives them.

`benchmark` reads the peak FLOP/s to report utilisation; `aot` reads the HBM to check that a
config fits and the HBM bandwidth for its roofline estimate. Figures are per JAX device: a TPU v4
or v5p chip is one (megacore) device; TPU v2/v3 devices are single cores.
"""

from __future__ import annotations

import dataclasses
import re

from fer_flax.core.errors import UserError

_G = 1e9
_GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One device's dense bfloat16 peak FLOP/s, HBM bytes and HBM bytes/s (None where unlisted)."""
  device_kind: str  # a fragment of JAX's `device_kind`; the first match in CHIPS counts
  bf16_flops: float
  hbm_bytes: int | None = None
  hbm_bytes_per_second: float | None = None


CHIPS = (
    Chip('H100 PCIe', 756e12), Chip('H100 NVL', 835e12), Chip('H100', 989e12),
    Chip('H200', 989e12), Chip('GH200', 989e12), Chip('B200', 2250e12), Chip('A100', 312e12),
    Chip('L40S', 362e12), Chip('L4', 121e12), Chip('A10G', 70e12),
    # Cloud TPU's system-architecture pages.
    Chip('TPU v6 lite', 918e12, 32 * _GIB, 1638 * _G),
    Chip('TPU v5 lite', 197e12, 16 * _GIB, 819 * _G),
    Chip('TPU v5', 459e12, 95 * _GIB, 2765 * _G),  # v5p's device_kind (after v5 lite's)
    Chip('TPU v4', 275e12, 32 * _GIB, 1200 * _G),
    Chip('TPU v3', 61.5e12), Chip('TPU v2', 22.5e12),
)


def chip(device_kind: str) -> Chip | None:
  """The datasheet of a JAX device of this kind, where CHIPS lists it."""
  return next((c for c in CHIPS if c.device_kind in device_kind), None)


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  """A Cloud TPU accelerator type as libtpu describes it: topology, chips, chips on each host."""
  accelerator_type: str  # Cloud TPU's name, e.g. v5litepod-16
  topology: str          # libtpu's name, e.g. v5e:4x4
  chips: int
  chips_per_host_bounds: tuple[int, int, int]
  megacore: bool         # v4 and v5p: one JAX device per chip, its two TensorCores together

  @property
  def hosts(self) -> int:
    return self.chips // (self.chips_per_host_bounds[0] * self.chips_per_host_bounds[1]
                          * self.chips_per_host_bounds[2])


# Chips -> topology. v4 and v5p are named by TensorCores (two per chip), v5e and v6e by chips.
_3D = {4: '2x2x1', 8: '2x2x2', 16: '2x2x4', 32: '2x4x4', 64: '4x4x4', 128: '4x4x8', 256: '4x8x8',
       512: '8x8x8', 1024: '8x8x16', 2048: '8x16x16'}
_2D = {1: '1x1', 4: '2x2', 8: '2x4', 16: '4x4', 32: '4x8', 64: '8x8', 128: '8x16', 256: '16x16'}
# Cloud TPU name -> (libtpu generation, TensorCores a name counts per chip, shapes by chips).
_FAMILIES = {'v4': ('v4', 2, _3D), 'v5p': ('v5p', 2, _3D), 'v5litepod': ('v5e', 1, _2D),
             'v6e': ('v6e', 1, _2D)}


def _single_host_bounds(chips: int) -> tuple[int, int, int]:
  """v5e and v6e VMs of 1, 4 or 8 chips hold the whole slice; larger slices have 4 a host."""
  return {1: (1, 1, 1), 4: (2, 2, 1), 8: (2, 4, 1)}.get(chips, (2, 2, 1))


def tpu_slices() -> list[str]:
  """Every accelerator type `tpu_slice` knows, smallest first within each family."""
  return [f'{name}-{chips * per_chip}' for name, (_, per_chip, shapes) in _FAMILIES.items()
          for chips in shapes]


def tpu_slice(accelerator_type: str) -> TpuSlice:
  """The slice Cloud TPU creates for `--accelerator-type=accelerator_type`."""
  match = re.fullmatch(r'(v4|v5p|v5litepod|v6e)-(\d+)', accelerator_type)
  family = _FAMILIES.get(match[1]) if match else None
  chips = int(match[2]) // family[1] if family and int(match[2]) % family[1] == 0 else None
  if family is None or chips not in family[2]:
    raise UserError(f'unknown accelerator type {accelerator_type!r}; known (Cloud TPU names): '
                    f'{", ".join(tpu_slices())}')
  generation, _, shapes = family
  three_d = generation in ('v4', 'v5p')
  return TpuSlice(accelerator_type, f'{generation}:{shapes[chips]}', chips,
                  (2, 2, 1) if three_d else _single_host_bounds(chips), megacore=three_d)
