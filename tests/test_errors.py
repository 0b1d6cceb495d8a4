"""A UserError ends a command with one line and status 1; other errors keep their traceback."""

import pytest

from fer_flax.core.errors import UserError, exits_on_user_error


def test_a_user_error_becomes_one_line_and_status_one():
  @exits_on_user_error
  def main(argv):
    raise UserError(f'{argv[1]} is missing; pass --data=PATH')

  with pytest.raises(SystemExit) as stop:
    main(['prog', 'fer2013.zip'])
  assert stop.value.code == 'fer_flax: error: fer2013.zip is missing; pass --data=PATH'


def test_other_errors_pass_through():
  @exits_on_user_error
  def main(argv):
    del argv
    raise ValueError('a bug')

  with pytest.raises(ValueError, match='a bug'):
    main(['prog'])
