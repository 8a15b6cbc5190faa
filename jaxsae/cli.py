"""Running experiment files: absl flags, ml_collections config files, and clean errors.

`run(main)` parses `--config=FILE` and `--config.a.b=value` overrides; a mistyped key, a bad
value or any `JaxsaeError` is printed as one message naming the fix (exit status 2), not as a
stack trace.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags, logging

from jaxsae.errors import JaxsaeError


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections reports an unknown override key as AttributeError("'key'\nDid you mean...").
    message = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    _fail(f"bad config override: {message}")
  return []


def run(main: Callable[[list[str]], None]) -> None:
  """absl.app.run with config-override and JaxsaeError messages instead of tracebacks."""

  def guarded(argv):
    # Library INFO logs (Orbax writes several per checkpoint) drown the progress bar; show
    # warnings and errors unless --verbosity asks for more.
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      main(argv)
    except JaxsaeError as e:
      _fail(str(e))

  app.run(guarded, flags_parser=_parse_flags)
