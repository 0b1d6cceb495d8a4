"""`python -m fer_flax.main`: bad input ends in one line."""

import subprocess

from tests import helpers


def test_cli_errors_are_one_line(tmp_path):
  result = subprocess.run(helpers.main_command(tmp_path / 'w',
                                                {'data.path': tmp_path / 'missing.zip'}),
                          cwd=helpers.REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("fer_flax: error: data path '") and 'missing.zip' in last
  assert '--config.data.path=' in last


def test_a_misspelt_override_ends_in_one_line_naming_it(tmp_path):
  result = subprocess.run([*helpers.main_command(tmp_path / 'w', {}), '--config.optimizer.nam=sgd'],
                          cwd=helpers.REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines() == [
      'FATAL Flags parsing error: --config.optimizer.nam is not a field of the config (Did you '
      'mean "name" instead of "nam"?); every field is in configs/base.py']
  assert not (tmp_path / 'w').exists()
