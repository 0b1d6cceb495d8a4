"""The one exception type that command-line tools turn into a one-line message, and how they do."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
  """A problem the user can fix; the message names the problem and the fix."""


class ImageError(UserError):
  """A photo that cannot be used, and why: `reason` is one of REASONS (the HTTP server answers
  each with its own status)."""
  REASONS = ('not an image', 'unreadable', 'too large', 'unsupported')

  def __init__(self, message: str, reason: str):
    super().__init__(message)
    assert reason in self.REASONS, reason
    self.reason = reason


def exits_on_user_error(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
  """Wraps a tool's `main(argv)`: a UserError ends it with `fer_flax: error: ...`, no traceback."""

  @functools.wraps(main)
  def wrapped(argv: list[str]) -> Any:
    try:
      return main(argv)
    except UserError as e:
      sys.exit(f'fer_flax: error: {e}')

  return wrapped
