"""User-facing errors: each message names the problem and the fix.

Experiments catch `JaxsaeError` at the top level and print it without a traceback (see `cli`).
"""


class JaxsaeError(ValueError):
  """Base class for errors caused by input the user can fix."""


class ConfigError(JaxsaeError):
  """A configuration is invalid. The message lists every problem at once."""

  def __init__(self, problems: list[str]):
    self.problems = list(problems)
    lines = "\n".join(f"  - {p}" for p in self.problems)
    super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class CorpusError(JaxsaeError):
  """The corpus is missing, empty or too small for the requested split or sequence length."""


class CheckpointError(JaxsaeError):
  """A checkpoint or exported model is missing, corrupt or of another shape or format."""


class HookError(JaxsaeError):
  """An unknown hook name, or an edit that changed a hooked value's shape or dtype."""


class DiskFullError(JaxsaeError):
  """No space left on a device while saving; what was saved before is intact."""
