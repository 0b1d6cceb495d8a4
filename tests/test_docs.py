"""README is for users: short, narrow, and every command it shows names flags that exist."""

import re
import subprocess
import sys

import pytest

from tests import helpers

README = (helpers.REPO / 'README.md').read_text()
DOCS = sorted((helpers.REPO / 'docs').glob('*.md'))


def test_the_readme_is_short_and_narrow():
  lines = README.split('\n')
  assert len(lines) <= 300
  assert [line for line in lines if len(line) > 100] == []


def test_the_docs_prose_is_narrow_and_every_link_resolves():
  for page in [helpers.REPO / 'README.md', *DOCS]:
    text = page.read_text()
    prose = re.sub(r'```.*?```', '', text, flags=re.S)
    wide = [line for line in prose.split('\n') if len(line) > 100 and not line.startswith('|')]
    assert wide == [], page.name
    for target in re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', text):
      assert (page.parent / target).exists(), f'{page.name} links to {target}'


def _commands() -> dict[str, set[str]]:
  """The flags each `python -m fer_flax.X` command in README's code blocks is given."""
  commands = {}
  for block in re.findall(r'```\n(.*?)```', README, re.S):
    for command in re.split(r'\n(?!\s)', block.replace('\\\n', ' ')):
      match = re.search(r'python -m (fer_flax\.\w+)(.*)', command)
      if match:
        given = re.findall(r'--([\w-]+)', match.group(2).split('#')[0])
        commands.setdefault(match.group(1), set()).update(given)
  return commands


@pytest.mark.parametrize('module', sorted(_commands()))
def test_every_flag_the_readme_gives_a_command_exists(module):
  flags = _commands()[module]
  # A package's command is its __main__ (python -m fer_flax.serve).
  code = (f'import importlib; m = importlib.import_module("{module}"); '
          f'm = importlib.import_module("{module}.__main__") if hasattr(m, "__path__") else m; '
          'm._define_flags(); from absl import flags; print(" ".join(flags.FLAGS))')
  result = subprocess.run([sys.executable, '-c', code], cwd=helpers.REPO, capture_output=True,
                          text=True, timeout=120, check=True)
  defined = set(result.stdout.split())
  unknown = {f for f in flags if f.split('.')[0] not in defined
             and not (f.startswith('no') and f[2:] in defined)}
  assert unknown == set(), module
