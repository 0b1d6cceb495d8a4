"""What every command shares: the absl spellings of negated booleans, and list flags."""

import importlib.metadata
import pathlib
import subprocess
import sys

from absl import flags

from fer_flax.core import cli
from tests import helpers


def test_old_negations_become_absl_ones_and_lists_split():
  values = flags.FlagValues()
  flags.DEFINE_boolean('detect', True, '', flag_values=values)
  values(['prog', *[cli.RENAMED_FLAGS.get(a, a) for a in ('--no-detect',)]])
  assert values.detect is False
  assert cli.split_list(['a,b', 'c', '']) == ['a', 'b', 'c']
  assert cli.split_list(None) == []


def test_an_unknown_config_field_is_named_with_its_nearest_one():
  error = AttributeError('\'nam\'\\nDid you mean "name" instead of "nam"?')
  message = cli._unknown_field(error, ['prog', '--config.optimizer.nam=sgd'])  # pylint: disable=protected-access
  assert message == ('--config.optimizer.nam is not a field of the config (Did you mean "name" '
                     'instead of "nam"?); every field is in configs/base.py')


def test_every_script_on_the_path_starts_a_command():
  scripts = {e.name: e for e in importlib.metadata.entry_points(group='console_scripts')
             if e.value.startswith('fer_flax.')}
  assert sorted(scripts) == ['fer-flax-aot', 'fer-flax-benchmark', 'fer-flax-evaluate',
                             'fer-flax-export', 'fer-flax-models', 'fer-flax-plots',
                             'fer-flax-predict', 'fer-flax-serve', 'fer-flax-timing',
                             'fer-flax-train']
  assert all(callable(entry.load()) for entry in scripts.values())


def test_a_scripts_help_is_its_commands():
  """fer-flax-serve --help: the command's text and flags, its own and those it adopts."""
  script = pathlib.Path(sys.executable).parent / 'fer-flax-serve'
  result = subprocess.run([str(script), '--help'], capture_output=True, text=True, timeout=120)
  assert result.stdout.startswith('Serves the HTTP API and the web page'), result.stdout[:300]
  for flag in ('--model', '--workdir', '--port', '--api_key', '--[no]align'):
    assert f'\n  {flag}:' in result.stdout, flag


def test_a_script_reads_the_configs_of_the_folder_it_runs_in(tmp_path):
  script = pathlib.Path(sys.executable).parent / 'fer-flax-train'
  result = subprocess.run([str(script), '--config=configs/tiny.py', f'--workdir={tmp_path / "w"}',
                           f'--config.data.path={tmp_path / "missing.zip"}'], cwd=helpers.REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("fer_flax: error: data path '")
