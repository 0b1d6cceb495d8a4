"""The one exception type that command-line entry points turn into a one-line message."""


class UserError(Exception):
  """A problem the user can fix; the message names the problem and the fix."""
