"""What every command shares: absl flags parsed into one-line errors, and list-valued flags.

Each command defines its flags in `_define_flags()` and starts with `run()`, which
`python -m fer_flax.X` and the `fer-flax-*` scripts both call.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

# Spellings from before the absl convention, still accepted: absl negates a boolean as --noX.
RENAMED_FLAGS = {'--no-detect': '--nodetect', '--no-align': '--noalign'}


def _unknown_field(error: Exception, argv: Sequence[str]) -> str:
  """The one-line message for a --config.FIELD override that names no field of the config."""
  text = str(error).strip('\'"').replace('\\n', '\n').replace("\\'", "'")
  key, _, hint = text.partition('\n')
  key = key.strip('\'"')
  given = next((a for a in argv if a.startswith('--config.')
                and re.search(rf'\.{re.escape(key)}(=|$)', a)), f'--config....{key}')
  hint = f' ({hint.strip()})' if hint.strip() else ''
  return (f'{given.partition("=")[0]} is not a field of the config{hint}; every field is in '
          'configs/base.py')


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, after the renamed spellings; a misspelt --config.FIELD ends in one line."""
  argv = [RENAMED_FLAGS.get(arg, arg) for arg in argv]
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:  # ml_collections' answer to an unknown field
    print(f'FATAL Flags parsing error: {_unknown_field(e, argv)}', file=sys.stderr)
    sys.exit(1)


def run(main: Callable[[list[str]], Any], define_flags: Callable[[], None]) -> None:
  """Defines the command's flags and runs `main` under absl. As `python -m` does, the current
  folder comes first on the import path, so a `fer-flax-*` script finds `configs/` too, and
  its --help shows the command's text and flags (absl shows those of the script itself)."""
  if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  define_flags()
  command = sys.modules[main.__module__]
  if command.__name__ != '__main__':  # a fer-flax-* script
    for flag in flags.FLAGS.get_key_flags_for_module(command):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    sys.modules['__main__'].__doc__ = command.__doc__
  app.run(main, flags_parser=parse_flags)


def split_list(values: Sequence[str] | None) -> list[str]:
  """A list flag's values, whether repeated or comma-separated."""
  return [v for value in values or () for v in value.split(',') if v]
