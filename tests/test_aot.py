"""fer_flax.aot: the programs training runs compile for real TPU slices on this CPU host, their
per-chip figures move as they must, and what cannot run ends in one line."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from configs import tiny
from fer_flax.core import chips, platforms
from fer_flax.core.errors import UserError
from fer_flax.train import aot
from tests import helpers

if not platforms.libtpu_installed():
  if os.environ.get('CI'):
    raise RuntimeError("CI must compile for TPUs: libtpu is missing (pip install -e '.[test]')")
  pytest.skip("libtpu is not installed (pip install -e '.[tpu]')", allow_module_level=True)


def _config(**overrides):
  """The tiny config on the devices' input, 4 steps a call: 897 steps an epoch on 8 or 16 chips
  (batch 32) leave calls of 4 and of 1."""
  config = tiny.get_config()
  config.data.pipeline = 'memory'
  config.batch_size, config.eval_batch_size, config.steps_per_call = 32, 32, 4
  for field, value in overrides.items():
    config[field] = value
  return config


@pytest.fixture(scope='module')
def one_host():
  config = _config()
  config.progressive.sizes, config.progressive.fractions = (32,), (0.5,)
  return aot.check(config, 'v5litepod-8', tta_modes=('none', 'flip'))


@pytest.fixture(scope='module')
def four_hosts():
  return aot.check(_config(), 'v5litepod-16', tta_modes=('flip',))


def _program(report, name):
  return next(p for p in report['programs'] if p['name'] == name)


def test_every_program_training_runs_compiles_for_a_single_host_slice(one_host):
  assert (one_host['chips'], one_host['hosts'], one_host['device_kind']) == (8, 1, 'TPU v5 lite')
  assert [p['name'] for p in one_host['programs']] == [
      'train call, 4 steps at 32x32', 'train call, 1 step at 32x32',
      'train call, 4 steps at 48x48', 'train call, 1 step at 48x48',
      'evaluation, tta=none', 'evaluation, tta=flip',
      'input: shuffle', 'input: gather 4 steps', 'input: gather 1 step']
  assert one_host['steps_per_epoch'] == 897 and one_host['batch_per_chip'] == 4
  assert one_host['fits'] is True
  assert all(p['compile_seconds'] > 0 and p['generated_code_bytes'] > 0
             for p in one_host['programs'])
  # The state is donated: the train call writes it into its arguments' buffers.
  train = _program(one_host, 'train call, 4 steps at 48x48')
  assert train['alias_bytes'] == one_host['hbm_bytes_per_chip']['training']['train state']
  json.loads(json.dumps(one_host))  # what --json writes


def test_the_fast_training_options_compile_with_their_own_programs():
  config = _config(num_epochs=3)
  config.model = ml_collections.ConfigDict({
      'name': 'vgg', 'stages': ((4,), (8,)), 'hidden': (16,), 'dropout_rate': 0.0,
      'dtype': 'bfloat16', 'whiten': 2, 'dirac_init': True, 'norm_scale': False,
      'head_norm': True})
  config.augment.update(flip=True, alternate_flips=True, clean_last_epochs=1)
  config.optimizer.lookahead_steps = 5
  report = aot.check(config, 'v5litepod-8', tta_modes=('none',))
  assert [p['name'] for p in report['programs']] == [
      'train call, 4 steps at 48x48', 'train call, 1 step at 48x48',
      'train call, 4 steps at 48x48, clean', 'train call, 1 step at 48x48, clean',
      'whitening fit', 'evaluation, tta=none',
      'input: shuffle', 'input: gather 4 steps', 'input: gather 1 step']
  assert report['fits'] is True
  # The fit is data-parallel: a chip sums the patch moments of its own faces, not of all the
  # call's 128 (4 steps of 32; 47 x 47 patches of 4 values, 4 x 4 products each).
  whole_call_flops = 2 * 128 * 47 * 47 * 4 * 4
  assert _program(report, 'whitening fit')['flops'] < whole_call_flops / 2


def test_the_multi_host_slice_and_its_on_device_input_compile(four_hosts):
  assert (four_hosts['chips'], four_hosts['hosts']) == (16, 4)
  assert chips.tpu_slice('v5litepod-16').hosts == 4
  assert {'input: shuffle', 'input: gather 4 steps', 'input: gather 1 step'} <= {
      p['name'] for p in four_hosts['programs']}
  assert four_hosts['fits'] is True


def test_twice_the_chips_for_the_same_batch_hold_half_of_it_and_the_same_state(one_host,
                                                                               four_hosts):
  eight = one_host['hbm_bytes_per_chip']['training']
  sixteen = four_hosts['hbm_bytes_per_chip']['training']
  assert sixteen['train state'] == eight['train state'] > 0
  assert sixteen['batches'] * 2 == eight['batches']
  # Within the tiles the TPU pads arrays to: [1794] int32 labels take more than half of [3588].
  assert sixteen['training split'] * 2 == pytest.approx(eight['training split'], rel=0.05)
  name = 'train call, 4 steps at 48x48'
  eight_train, sixteen_train = _program(one_host, name), _program(four_hosts, name)
  assert eight_train['argument_bytes'] > sixteen_train['argument_bytes']
  assert 0.4 < sixteen_train['flops'] / eight_train['flops'] < 0.6


def test_each_chip_evaluates_only_the_views_of_its_own_faces(four_hosts):
  """Test-time views stay data-parallel: a chip does twice its share for two views, not every
  view of the whole batch (16 times its share here, as it did before inference.log_probabilities
  kept a face's views on its chip)."""
  none = _program(four_hosts, 'evaluation, tta=none')['flops']
  assert none < _program(four_hosts, 'evaluation, tta=flip')['flops'] <= 2.2 * none


def test_a_call_of_n_steps_costs_what_one_step_does(one_host):
  """XLA's cost analysis counts a loop's body once: the report's per-step FLOPs rest on it."""
  four = _program(one_host, 'train call, 4 steps at 48x48')
  one = _program(one_host, 'train call, 1 step at 48x48')
  assert four['flops'] == pytest.approx(one['flops'], rel=0.01)
  assert one_host['train_step_per_chip']['flops'] == four['flops']
  estimate = one_host['estimate']
  assert estimate['step_seconds'] > 0 and estimate['bound_by'] in ('compute', 'HBM bandwidth')
  assert estimate['epoch_seconds'] > 897 * estimate['step_seconds']


def test_an_unknown_accelerator_type_lists_the_known_ones():
  with pytest.raises(UserError, match=r"unknown accelerator type 'v5litepod-6'; known \(Cloud "
                                      r'TPU names\): v4-8, .*v5litepod-8, .*v6e-256'):
    aot.check(_config(), 'v5litepod-6')


def test_a_batch_that_does_not_divide_over_the_chips_is_refused():
  with pytest.raises(UserError, match=r'config.batch_size=8 is not divisible by the 16 devices; '
                                      r'use a multiple of 16'):
    aot.check(_config(batch_size=8), 'v5litepod-16')


def test_a_program_larger_than_the_chip_is_refused_with_the_fix():
  config = _config(batch_size=28_000, steps_per_call=1)
  config.model.features = (64, 128)
  with pytest.raises(UserError, match=r'the config does not fit on v5litepod-4: train call, 1 step '
                                      r'at 48x48: Ran out of memory on HBM.*; lower '
                                      r'--config.batch_size \(7000 a chip now\) or '
                                      r'--config.steps_per_call, or use a larger slice$'):
    aot.check(config, 'v5litepod-4', tta_modes=('none',))


def test_a_run_whose_buffers_together_exceed_the_chip_is_refused(monkeypatch):
  small = chips.Chip('TPU v5 lite', 197e12, 2**20, 819e9)
  monkeypatch.setattr(chips, 'chip', lambda device_kind: small)
  report = aot.check(_config(), 'v5litepod-4', tta_modes=('none',))
  assert report['fits'] is False and report['hbm_bytes_per_chip']['available'] == 2**20
  with pytest.raises(UserError, match=r'the config does not fit on v5litepod-4: it needs [\d.]+ '
                                      r'MiB of HBM a chip, which has 1.0 MiB; lower '
                                      r'--config.batch_size \(8 a chip now\)'):
    aot.refuse_unless_fits(report)


def test_without_libtpu_the_error_names_the_extra(monkeypatch):
  monkeypatch.setattr(platforms, 'libtpu_installed', lambda: False)
  with pytest.raises(UserError, match=r"needs libtpu.*pip install -e '.\[tpu\]'"):
    aot.check(_config(), 'v5litepod-4')


def test_the_command_prints_the_report_writes_json_and_stays_quiet(tmp_path):
  report = tmp_path / 'report.json'
  result = subprocess.run(
      [sys.executable, '-m', 'fer_flax.aot', '--config=configs/tiny.py',
       '--accelerator_type=v5litepod-4', '--tta=none', f'--json={report}'],
      cwd=helpers.REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''  # libtpu's start-up complaints are kept off the console
  assert 'v5litepod-4 (v5e:2x2): 4 x TPU v5 lite on 1 host(s)' in result.stdout
  assert 'estimated (roofline, not measured)' in result.stdout
  written = json.loads(report.read_text())
  assert (written['chips'], written['hosts'], written['fits']) == (4, 1, True)


def test_libtpu_describes_every_known_slice_with_its_chips_and_hosts():
  for accelerator_type in chips.tpu_slices():
    slice_ = chips.tpu_slice(accelerator_type)
    devices = aot.slice_devices(slice_)
    hosts = {d.process_index for d in devices}
    assert (len(devices), len(hosts)) == (slice_.chips, slice_.hosts), accelerator_type
