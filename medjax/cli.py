"""What every ``python -m medjax.<command>`` shares: a user's mistake is one line, not a
traceback.

A command raises :class:`UserError` for a problem the user can fix (a workdir that is not
a finished run, runs that cannot be compared); :func:`run` prints it as
``medjax.<command>: error: <message>`` on stderr and exits with status 2, the usual status
of a command-line usage error. Anything else is a bug and keeps its traceback.
"""
import sys

from absl import app


class UserError(Exception):
  """A problem with the command's arguments or inputs, explained in one line."""


def run(main, name: str) -> None:
  """``absl.app.run(main)``, with :class:`UserError` turned into one line and exit 2."""
  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f"{name}: error: {e}", file=sys.stderr)
      sys.exit(2)
  app.run(guarded)
