"""One Orbax CheckpointManager for every trainer: train state, data-iterator position and JSON
metadata saved together, asynchronously, keeping the last N; restore against a sharded target.

Restoring always takes an abstract target with shardings (`sharding.with_shardings`), so a run
saved on 8 devices resumes on 1 and the optimizer state keeps its types.
"""

from __future__ import annotations

import pathlib
from typing import Any

import grain
import orbax.checkpoint as ocp

from jaxsae.errors import CheckpointError


class Checkpointer:
  """Save and restore (state, data iterator, metadata) under `<directory>/<step>/`."""

  def __init__(
    self,
    directory: str | pathlib.Path,
    *,
    save_every: int,
    keep: int = 3,
    async_save: bool = True,
  ):
    self.directory = pathlib.Path(directory).absolute()
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=1,  # The interval is applied in `save`, including the first step.
      max_to_keep=keep,
      enable_async_checkpointing=async_save,
      create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  @classmethod
  def for_run(cls, workdir: str | pathlib.Path, train: Any) -> Checkpointer:
    """The checkpointer of a training run, from its config's `train` section."""
    return cls(
      pathlib.Path(workdir) / "checkpoints",
      save_every=train.checkpoint_every,
      keep=train.keep_checkpoints,
      async_save=train.async_checkpoints,
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(
    self,
    step: int,
    state: Any,
    data_iterator: grain.DatasetIterator | None = None,
    metadata: dict | None = None,
    *,
    force: bool = False,
  ) -> bool:
    """Save if `step` is a multiple of `save_every` (or `force`); returns whether it saved."""
    if not force and step % self.save_every:
      return False
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(metadata or {})}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(
    self,
    abstract_state: Any,
    data_iterator: grain.DatasetIterator | None = None,
    step: int | None = None,
  ) -> tuple[Any, dict]:
    """Restore `step` (default: latest) into the shapes and shardings of `abstract_state`.

    The data iterator, if given, is moved to its saved position in place.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}; train first or pick a workdir")
    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["meta"] or {})

  def wait(self) -> None:
    """Block until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
