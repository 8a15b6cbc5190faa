"""Stop a training or harvest loop cleanly on SIGTERM (a scheduler's preemption notice).

    with preemption.Guard("lm training") as guard, checkpointer:
      for step in ...:
        state = train_step(state, batch)
        if guard.should_stop(step):   # every process gets the same answer at the same step
          checkpointer.save(step, state, force=True)
          guard.stopped(step, f"checkpoint step {step} in {checkpointer.directory}")
          break
    # Leaving the guard (after the checkpointer has waited for its save): one line on stderr,
    # then `Preempted` (a SystemExit with code EXIT_CODE).

Agreeing on the step:
  - one process: the step after the signal arrived (the step in flight is finished first);
  - several processes with JAX's preemption service (`jax_enable_preemption_service`, on by
    default): JAX's own SIGTERM notifier tells every process, and
    `multihost_utils.reached_preemption_sync_point` picks the step (the largest step any
    process had reached, plus one). The guard then installs no handler of its own;
  - several processes without it: a SIGTERM handler sets a flag, and every step all processes
    all-gather their flags (one tiny host collective per step).

Exit code: EXIT_CODE = 143 (128 + SIGTERM), what a shell or Kubernetes reports for a process
ended by SIGTERM: a scheduler sees "terminated by its preemption notice", not a crash (1) or a
finished job (0). The work is saved; rerunning the same command resumes it bitwise.

A second SIGTERM while the guard is active (e.g. during the final save) is only counted: the
save finishes and commits, then the process exits with EXIT_CODE. A SIGTERM that arrives after
the last check (during the last step or its save) goes, when the guard exits, to the handler
that was there before; with none, the same line and exit code (nothing is left to redo).
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from typing import Any

import numpy as np

EXIT_CODE = 143  # 128 + SIGTERM: "terminated on request", not a crash.


class Preempted(SystemExit):
  """A loop stopped on SIGTERM after saving its work; exits the process with EXIT_CODE."""

  def __init__(self, step: int | None, message: str):
    super().__init__(EXIT_CODE)
    self.step, self.message = step, message

  def __str__(self) -> str:
    return self.message


def resume_command() -> str:
  """The command line of this process, as typed (rerunning it resumes the run)."""
  return shlex.join(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])


def _sync_manager() -> Any:
  """JAX's preemption sync manager in a multi-process run with the preemption service on."""
  import jax

  if jax.process_count() == 1:
    return None
  try:
    from jax._src import distributed  # No public accessor; multihost_utils reads the same.
  except ImportError:  # Moved in another JAX: fall back to the guard's own flag.
    return None
  return getattr(distributed.global_state, "preemption_sync_manager", None)


class Guard:
  """Catch SIGTERM while a loop runs; see the module docstring."""

  def __init__(self, what: str, unit: str = "step"):
    self.what, self.unit = what, unit  # E.g. "LM training", "step": for the exit line.
    self.signals = 0  # SIGTERMs this guard's handler received.
    self.stopped_at: int | None = None
    self._saved = ""
    self._previous: Any = None
    self._installed = False
    self._sync = None

  def __enter__(self) -> Guard:
    import jax

    self._sync = _sync_manager()
    self._multi = jax.process_count() > 1
    # With JAX's preemption service its notifier owns SIGTERM; replacing it would hide the
    # notice from the other processes. Handlers can only be set from the main thread.
    if self._sync is None and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
      self._installed = True
    return self

  def _on_signal(self, signum, frame) -> None:
    self.signals += 1  # Only counted: the loop decides when to stop, after saving.

  @property
  def requested(self) -> bool:
    return self.signals > 0

  def should_stop(self, step: int) -> bool:
    """Whether to save at `step` and stop. Call at every step, on every process, with the same
    step numbers; all processes get the same answer."""
    if self._sync is not None:
      from jax.experimental import multihost_utils

      return bool(multihost_utils.reached_preemption_sync_point(step))
    if not self._multi:
      return self.requested
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.asarray(flags).any())

  def stopped(self, step: int, saved: str) -> None:
    """Record that the loop saved `saved` (e.g. "checkpoint step 12 in <dir>") and stopped at
    `step`; leaving the guard then reports it and raises `Preempted`."""
    self.stopped_at, self._saved = step, saved

  def __exit__(self, exc_type, exc, tb) -> None:
    try:
      if exc_type is not None:
        return
      if self.stopped_at is None and self.requested:  # Arrived after the last check.
        if callable(self._previous):
          self._previous(signal.SIGTERM, None)  # Whoever handled it before decides.
        if self._previous not in (None, signal.SIG_DFL):
          return
        self._report(f"SIGTERM arrived during the last {self.unit}; everything is saved")
      if self.stopped_at is not None:
        self._report(f"stopped by SIGTERM after {self.unit} {self.stopped_at}; saved {self._saved}")
    finally:
      if self._installed:  # None: a handler not set from Python; SIG_DFL is the nearest.
        signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)
        self._installed = False

  def _report(self, what_happened: str) -> None:
    """Print the exit line and raise `Preempted`."""
    import jax

    who = f"process {jax.process_index()}: " if jax.process_count() > 1 else ""
    message = (
      f"{who}{self.what} {what_happened}. Exit code {EXIT_CODE}. Resume with the same "
      f"command: {resume_command()}"
    )
    print(message, file=sys.stderr, flush=True)
    raise Preempted(self.stopped_at, message)
