"""chips: datasheet figures by JAX device kind, and Cloud TPU accelerator types as slices."""

import pytest

from fer_flax.core import chips
from fer_flax.core.errors import UserError


def test_the_bf16_peak_is_known_for_the_chips_people_train_on():
  assert chips.chip('NVIDIA H100 80GB HBM3').bf16_flops == 989e12
  assert chips.chip('NVIDIA H100 PCIe').bf16_flops == 756e12
  assert chips.chip('TPU v5 lite').bf16_flops == 197e12
  assert chips.chip('cpu') is None


def test_every_tpu_has_its_hbm_and_bandwidth_and_v5p_is_not_taken_for_v5e():
  for kind in ('TPU v4', 'TPU v5 lite', 'TPU v5', 'TPU v6 lite'):
    assert chips.chip(kind).hbm_bytes and chips.chip(kind).hbm_bytes_per_second
  assert chips.chip('TPU v5 lite').hbm_bytes == 16 * 2**30
  assert chips.chip('TPU v5').hbm_bytes == 95 * 2**30


@pytest.mark.parametrize('accelerator_type, topology, chip_count, hosts', [
    ('v5litepod-1', 'v5e:1x1', 1, 1), ('v5litepod-4', 'v5e:2x2', 4, 1),
    ('v5litepod-8', 'v5e:2x4', 8, 1), ('v5litepod-16', 'v5e:4x4', 16, 4),
    ('v6e-8', 'v6e:2x4', 8, 1), ('v6e-256', 'v6e:16x16', 256, 64),
    ('v4-8', 'v4:2x2x1', 4, 1), ('v4-32', 'v4:2x2x4', 16, 4), ('v5p-8', 'v5p:2x2x1', 4, 1)])
def test_cloud_tpu_names_map_to_the_slices_cloud_tpu_creates(accelerator_type, topology,
                                                            chip_count, hosts):
  slice_ = chips.tpu_slice(accelerator_type)
  assert (slice_.topology, slice_.chips, slice_.hosts) == (topology, chip_count, hosts)
  assert slice_.megacore == accelerator_type.startswith(('v4', 'v5p'))
  assert accelerator_type in chips.tpu_slices()


@pytest.mark.parametrize('name', ['v4-6', 'v4-7', 'v5litepod-2', 'v5e-8', 'v7-8', 'tpu'])
def test_an_unknown_accelerator_type_is_refused_with_the_known_ones(name):
  with pytest.raises(UserError, match=rf"unknown accelerator type '{name}'; known \(Cloud TPU "
                                      r'names\): v4-8, v4-16, .*, v6e-256$'):
    chips.tpu_slice(name)
