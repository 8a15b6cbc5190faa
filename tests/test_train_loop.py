"""The shared training loop with fake steps: step n-1's metrics are read only after step n is
dispatched, checkpoints follow the cadence and the last step, a non-finite step stops the run
(named, nothing saved after it) or is counted and skipped, and SIGTERM saves the next step."""

import contextlib
import itertools
import os
import pathlib
import signal
import types

import pytest

from jaxsae import nonfinite, preemption, train_loop
from jaxsae.errors import JaxsaeError


class FakeCheckpointer:
  """Records saves in the shared event list; saves every `save_every` steps or when forced."""

  def __init__(self, events, save_every):
    self.events, self.save_every, self.saved = events, save_every, []
    self.directory = pathlib.Path("/ckpt")

  def will_save(self, step, *, force=False):
    return force or step % self.save_every == 0

  def save(self, step, state, data_iterator, metadata, *, force=False):
    self.events.append(("save", step))
    self.saved.append((step, state, data_iterator, metadata))

  def latest_step(self):
    return self.saved[-1][0] if self.saved else None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.events.append(("close checkpointer",))


def make_loop(events, *, start=0, bad=(), log_every=1, on_signal_at=None, **fields):
  """A loop over integer states (the step count) whose metrics are {"step": n}, fed batches
  from step `start` on; `bad` steps are non-finite; at step `on_signal_at` the process sends
  itself SIGTERM."""

  def step(state, batch):
    n = state + 1
    assert batch == f"batch {n}"
    events.append(("dispatch", n))
    if n == on_signal_at:
      os.kill(os.getpid(), signal.SIGTERM)
    return n, {"step": n}

  def check(step, metrics):
    events.append(("check", metrics["step"]))
    if step in bad:
      return train_loop.NonFinite(f"bad step {step}", f"skipped step {step}", ("a", "b"))
    return None

  def record(step, metrics):
    events.append(("record", step))
    return {"step": str(step)}

  batches = (f"batch {n}" for n in itertools.count(start + 1))
  defaults = dict(total_steps=10, per_step=4, check=check)
  return train_loop.Loop(step, lambda: next(batches), record, log_every, **{**defaults, **fields})


def test_step_n_minus_1_is_read_after_step_n_is_dispatched():
  events = []
  after = lambda step, state, metrics: events.append(("after", step))  # noqa: E731
  state = make_loop(events, after_dispatch=after).run(0, 0, 4)
  assert state == 4
  assert events == [
    ("dispatch", 1), ("after", 1),
    ("dispatch", 2), ("check", 1), ("record", 1), ("after", 2),
    ("dispatch", 3), ("check", 2), ("record", 2), ("after", 3),
    ("dispatch", 4), ("check", 3), ("record", 3), ("after", 4),
    ("check", 4), ("record", 4),
  ]  # fmt: skip


def test_records_every_log_every_and_the_last_step_and_the_first_if_asked():
  events = []
  make_loop(events, log_every=3).run(0, 0, 7)
  assert [e[1] for e in events if e[0] == "record"] == [3, 6, 7]
  events.clear()
  make_loop(events, log_every=3, log_first_step=True).run(0, 0, 7)
  assert [e[1] for e in events if e[0] == "record"] == [1, 3, 6, 7]


def test_checkpoints_at_the_cadence_and_the_last_step_after_their_metrics():
  events = []
  ckpt = FakeCheckpointer(events, save_every=3)
  saving = train_loop.Checkpoints(ckpt, "data", lambda step: {"tokens": 4 * step}, "test")
  make_loop(events, checkpoints=saving, start=2).run(
    2, 2, 8
  )  # Resumed at step 2, stopped early at 8.
  assert [(s, state, meta) for s, state, _, meta in ckpt.saved] == [
    (3, 3, {"tokens": 12}),
    (6, 6, {"tokens": 24}),
    (8, 8, {"tokens": 32}),
  ]
  for step in (3, 6, 8):  # A saved step's metrics are checked before the save.
    assert events.index(("check", step)) < events.index(("save", step))
  assert events[-1] == ("close checkpointer",)


def test_a_non_finite_step_stops_the_run_named_and_nothing_after_it_is_saved():
  events = []
  ckpt = FakeCheckpointer(events, save_every=2)
  saving = train_loop.Checkpoints(ckpt, None, lambda step: {}, "test")
  with pytest.raises(JaxsaeError, match="^bad step 4$"):
    make_loop(events, bad={4}, checkpoints=saving).run(0, 0, 10)
  assert [s for s, *_ in ckpt.saved] == [2]
  assert ("save", 4) not in events and events[-1] == ("close checkpointer",)


def test_skip_counts_the_batch_warns_and_goes_on():
  events, skipped = [], {"a": 2}

  def trainer():  # What a trainer's caller sees the warning come from: its own line.
    return make_loop(events, bad={2, 3}, on_nonfinite="skip", skipped=skipped).run(0, 0, 5)

  with pytest.warns(nonfinite.NonFiniteWarning) as caught:
    state = trainer()
  assert state == 5 and skipped == {"a": 4, "b": 2}
  assert [str(w.message) for w in caught] == ["skipped step 2", "skipped step 3"]
  assert caught[0].filename == __file__
  assert [e[1] for e in events if e[0] == "record"] == [1, 2, 3, 4, 5]


def test_sigterm_saves_the_step_it_is_agreed_on_then_exits_143_after_closing():
  events = []
  ckpt = FakeCheckpointer(events, save_every=100)
  saving = train_loop.Checkpoints(ckpt, None, lambda step: {}, "test training")
  log = contextlib.closing(types.SimpleNamespace(close=lambda: events.append(("close log",))))
  with pytest.raises(preemption.Preempted) as raised:
    make_loop(events, on_signal_at=3, checkpoints=saving, closing=(log,)).run(0, 0, 10)
  assert raised.value.code == 143 and raised.value.step == 3
  assert "saved checkpoint step 3 in /ckpt" in str(raised.value)
  assert [s for s, *_ in ckpt.saved] == [3]
  assert ("dispatch", 4) not in events
  assert events[-2:] == [("close checkpointer",), ("close log",)]  # Then the guard exits.
