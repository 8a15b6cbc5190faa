"""The training loop the LM, SAE and bridge trainers share.

    loop = train_loop.Loop(step=..., next_batch=..., record=..., log_every=..., ...)
    state = loop.run(state, start, stop)

Step n is dispatched before step n-1's metrics are read, so the device never waits on the host
and the host runs at most one step ahead (as in nanodo). Metrics are finished in step order:
  1. `check` (if given) flags a step whose inputs, loss or gradients were not finite: it stops
     the run (`on_nonfinite="stop"`, a JaxsaeError) or is counted in `skipped` and warned about
     ("skip"); see jaxsae.nonfinite;
  2. the progress bar advances;
  3. on a logging step (every `log_every`, and the last) `record` logs them.
With `checkpoints`, a step is saved at the checkpointer's cadence, at the last step and at the
step a SIGTERM is agreed on (jaxsae.preemption), and its metrics are finished first, so a bad
step stops the run before its state is saved. The preemption guard is left last, after the
checkpointer has waited for the save, so a preempted run exits 143 with its save committed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from jaxsae import nonfinite, preemption, run_log
from jaxsae.errors import JaxsaeError

if TYPE_CHECKING:  # The bridges' trainer saves nothing: it need not import Orbax.
  from jaxsae.checkpoint import Checkpointer


@dataclasses.dataclass(frozen=True)
class NonFinite:
  """A step whose inputs, loss or gradients were not finite, as a trainer's `check` words it."""

  error: str  # Raised as a JaxsaeError under on_nonfinite="stop".
  warning: str  # Warned (NonFiniteWarning) under "skip".
  skipped: tuple[str, ...]  # The counters of `Loop.skipped` the skipped batch adds one to.


@dataclasses.dataclass(frozen=True)
class Checkpoints:
  """What a loop saves: the state, the data iterator's position and `metadata(step)`."""

  checkpointer: Checkpointer
  data_iterator: Any
  metadata: Callable[[int], dict]
  what: str  # The run, for the preemption line: "LM training".


@dataclasses.dataclass
class Loop:
  """One trainer's loop: the shared order of work, with the trainer's parts as callables."""

  step: Callable[[Any, Any], tuple[Any, Any]]  # (state, batch) -> (state, metrics), async.
  next_batch: Callable[[], Any]
  record: Callable[[int, Any], Mapping[str, str]]  # Logs a step; returns the bar's postfix.
  log_every: int
  total_steps: int  # Of the whole run, for the progress bar.
  per_step: int  # Progress-bar units (tokens or rows) per step.
  desc: str = "train"
  check: Callable[[int, Any], NonFinite | None] | None = None
  on_nonfinite: str = "stop"
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # Updated in place.
  checkpoints: Checkpoints | None = None  # None: no saves and no preemption guard.
  # Called with (step, state, metrics) once step n is dispatched and step n-1 finished, before
  # the step is saved: the LM's validation, the bridges' timing.
  after_dispatch: Callable[[int, Any, Any], None] | None = None
  log_first_step: bool = False  # Also record step 1 (the starting loss).
  closing: tuple = ()  # Closed when the loop ends, errors included: the run's RunLog.

  def run(self, state: Any, start: int, stop: int) -> Any:
    """Steps start + 1 … stop from `state`; returns the last state."""
    saving = self.checkpoints
    bar = run_log.progress(self.total_steps * self.per_step, start * self.per_step, self.desc)
    with contextlib.ExitStack() as stack:  # Left in reverse: the guard last, after the save.
      guard = stack.enter_context(preemption.Guard(saving.what)) if saving else None
      for resource in (*self.closing, *([saving.checkpointer] if saving else []), bar):
        stack.enter_context(resource)
      previous = None
      for step in range(start + 1, stop + 1):
        state, metrics = self.step(state, self.next_batch())
        # Read step n-1's metrics after step n is dispatched: the device never idles, and the
        # host runs at most one step ahead.
        if previous is not None:
          self._finish(*previous, stop, bar)
        previous = (step, metrics)
        if self.after_dispatch is not None:
          self.after_dispatch(step, state, metrics)
        if saving is None:
          continue
        preempted = step < stop and guard.should_stop(step)
        force = step == stop or preempted
        if saving.checkpointer.will_save(step, force=force):
          self._finish(*previous, stop, bar)  # A bad step stops the run before its state is saved.
          previous = None
          metadata = saving.metadata(step)
          saving.checkpointer.save(step, state, saving.data_iterator, metadata, force=force)
        if preempted:
          guard.stopped(step, f"checkpoint step {step} in {saving.checkpointer.directory}")
          break
      if previous is not None:
        self._finish(*previous, stop, bar)
    return state

  def _finish(self, step: int, metrics: Any, stop: int, bar) -> None:
    """Wait for a step's metrics: stop at or count a non-finite step; record a logging step."""
    bad = self.check(step, metrics) if self.check is not None else None
    if bad is not None:
      if self.on_nonfinite == "stop":
        raise JaxsaeError(bad.error)
      for key in bad.skipped:
        self.skipped[key] = self.skipped.get(key, 0) + 1
      # Level 4: the trainer's caller (_finish, run, the trainer, its caller).
      warnings.warn(bad.warning, nonfinite.NonFiniteWarning, stacklevel=4)
    bar.update(self.per_step)
    if step % self.log_every == 0 or step == stop or (self.log_first_step and step == 1):
      bar.set_postfix(self.record(step, metrics))
