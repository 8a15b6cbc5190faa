"""One Orbax CheckpointManager for every trainer: train state, data-iterator position and JSON
metadata saved together, asynchronously, keeping the last N; restore against a sharded target.

Restoring always takes an abstract target with shardings (`sharding.with_shardings`), so a run
saved on 8 devices resumes on 1 and the optimizer state keeps its types.

Crash safety. Every save stores a checksum of each state array in its metadata, and a restore
checks it, so array files altered after saving are found even where Orbax reads them without
complaint. `restore()` without a step takes the newest intact checkpoint: a step that is empty,
lacks an item or a file, has a truncated or garbled file, or fails its checksum is skipped with
a warning (one line per step, naming it and why). The skipped steps newer than the one restored
are moved to `<directory>/corrupt/<step>` (not deleted: move one back to retry it), so the
resumed run can save those step numbers again. The temporary directories of a save that was
killed (`<step>.orbax-checkpoint-tmp-*`) are never steps and are left alone.

Durability. Orbax's array files are fsynced by tensorstore, but not its JSON files (the metadata
with the checksums, the data-iterator position) nor the directories it renames; so a finished
step's temporary directory is fsynced, file by file, before it is renamed into place, and the
checkpoint directory after (`_DurableRename`). A power loss then leaves whole steps or none.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pathlib
import re
import sys
import warnings
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxsae.errors import CheckpointError, DiskFullError
from jaxsae.saved import disk_full, fsync_path, fsync_tree

CHECKSUMS_KEY = "_state_checksums"  # Reserved metadata key; `restore` strips it.
CORRUPT_DIR = "corrupt"


class CheckpointFallbackWarning(UserWarning):
  """A checkpoint step could not be restored and an older one is used instead."""


class _Unusable(Exception):
  """One checkpoint step cannot be restored; the message says why, in one line."""


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
      temporary_path_class=_DurableRename,
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

  def will_save(self, step: int, *, force: bool = False) -> bool:
    """Whether `save(step, ..., force=force)` writes a checkpoint."""
    return force or step % self.save_every == 0

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
    if not self.will_save(step, force=force):
      return False
    metadata = {**(metadata or {}), CHECKSUMS_KEY: state_checksums(state)}
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(metadata)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    with self._disk_full(f"checkpoint step {step} (or the save before it)"):
      return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  @contextlib.contextmanager
  def _disk_full(self, what: str):
    """A full disk (seen when a save starts or is waited for) as a DiskFullError."""
    try:
      yield
    except Exception as e:
      if not disk_full(e):
        raise
      raise DiskFullError(
        f"no space left on the device of {self.directory} while saving {what}. The committed "
        f"steps {self.all_steps()} are intact (a step's leftover temporary directory is ignored "
        "on restore): free space and rerun the same command to resume"
      ) from e

  def restore(
    self,
    abstract_state: Any,
    data_iterator: grain.DatasetIterator | None = None,
    step: int | None = None,
  ) -> tuple[Any, dict]:
    """Restore `step` (default: the newest intact step) into the shapes and shardings of
    `abstract_state`; returns (state, metadata).

    The data iterator, if given, is moved to its saved position in place. Without `step`,
    unusable newer steps are skipped with a `CheckpointFallbackWarning` and moved to
    `<directory>/corrupt/`; CheckpointError if no step is intact (or `step` is not).
    """
    self._check_shapes(abstract_state, step)
    if step is not None:
      try:
        return self._restore_step(step, abstract_state, data_iterator)
      except _Unusable as e:
        raise CheckpointError(
          f"checkpoint step {step} in {self.directory} cannot be restored: {e}. Restore "
          f"another step (have: {self.all_steps()}) or pass no step to take the newest intact one"
        ) from None
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise CheckpointError(f"no checkpoint in {self.directory}; train first or pick a workdir")
    skipped: list[tuple[int, str]] = []
    for candidate in steps:
      try:
        restored = self._restore_step(candidate, abstract_state, data_iterator)
      except _Unusable as e:
        skipped.append((candidate, str(e)))
        warnings.warn(
          f"checkpoint step {candidate} in {self.directory} is unusable, trying an older one: {e}",
          CheckpointFallbackWarning,
          stacklevel=2,
        )
        continue
      if skipped:
        moved = self._set_aside([s for s, _ in skipped])
        warnings.warn(
          f"restored checkpoint step {candidate} instead of {steps[0]}; moved the unusable "
          f"step(s) {', '.join(map(str, moved))} to {self.directory / CORRUPT_DIR} (move one "
          "back to retry it)",
          CheckpointFallbackWarning,
          stacklevel=2,
        )
      return restored
    tried = "\n".join(f"  - step {s}: {why}" for s, why in skipped)
    raise CheckpointError(
      f"no intact checkpoint in {self.directory}; every step failed to restore:\n{tried}\n"
      f"Delete {self.directory} to start the run over, or point the run at another workdir. "
      "(If every step reports the same shape or structure problem, the checkpoints were "
      "written with another config: use that config.)"
    )

  def _check_shapes(self, abstract_state: Any, step: int | None) -> None:
    """CheckpointError if the saved state's array shapes (read from the newest readable step's
    metadata, or `step`'s) differ from `abstract_state`'s: a checkpoint of another config (e.g.
    another width or number of latents), not a damaged one, so no step is skipped."""
    steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    for candidate in steps:
      try:
        saved = ocp.StandardCheckpointHandler().metadata(self.directory / str(candidate) / "state")
      except Exception:  # Unreadable metadata is damage: the fallback deals with it.
        continue
      saved = _shapes_by_path(getattr(saved, "item_metadata", saved))
      wanted = _shapes_by_path(abstract_state)
      differ = [k for k in wanted if k in saved and saved[k] != wanted[k]]
      absent, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
      if absent or extra:
        raise CheckpointError(
          f"the checkpoints in {self.directory} hold another state: "
          + (f"this run's {', '.join(absent[:3])}{' …' if len(absent) > 3 else ''} not saved; "
             if absent else "")
          + (f"saved {', '.join(extra[:3])}{' …' if len(extra) > 3 else ''} not in this run; "
             if extra else "")
          + "the config changed since (e.g. the architecture or the sweep). Resume with the "
          "config that wrote them, or use another workdir"
        )  # fmt: skip
      if differ:
        shown = "; ".join(f"{k}: saved {saved[k]}, this run {wanted[k]}" for k in differ[:3])
        raise CheckpointError(
          f"the checkpoints in {self.directory} were written by a run of another shape "
          f"({len(differ)} array(s) differ: {shown}{' …' if len(differ) > 3 else ''}): the "
          "config changed since (e.g. the number of latents, the activation width or the "
          "model). Resume with the config that wrote them, or use another workdir"
        )
      return

  def _restore_step(self, step: int, abstract_state: Any, data_iterator) -> tuple[Any, dict]:
    """(state, metadata) of one step, verified; `_Unusable` with a one-line reason if not.
    Every verdict is agreed on by all processes, so they all restore the same step."""
    items = ["state", "meta"] + (["data"] if data_iterator is not None else [])
    problem = _agreed(self._missing_parts(step, items))
    if problem is not None:
      raise _Unusable(problem)
    args = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    _quiet_orphaned_reads()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**args))
      meta = restored["meta"]
      if not isinstance(meta, dict):
        problem = f"the metadata item holds {type(meta).__name__}, not a JSON object"
    except Exception as e:  # Orbax and tensorstore raise many types; all mean "unreadable".
      problem = _one_line(e)
    problem = _agreed(problem)
    if problem is not None:
      _collect_orphans()
      raise _Unusable(problem)
    meta = dict(meta)
    expected = meta.pop(CHECKSUMS_KEY, None)
    if expected is not None:  # Checkpoints written before checksums have none.
      actual = state_checksums(restored["state"])
      bad = [k for k in expected if k in actual and actual[k] != expected[k]]
      more = " …" if len(bad) > 3 else ""
      problem = (
        f"checksum mismatch in {', '.join(bad[:3])}{more} (array files changed after saving)"
      )
      problem = _agreed(problem if bad else None)
      if problem is not None:
        raise _Unusable(problem)
    return restored["state"], meta

  def _missing_parts(self, step: int, items: list[str]) -> str | None:
    path = self.directory / str(step)
    if not path.is_dir():
      return f"{path} is missing"
    if not any(path.iterdir()):
      return "the step directory is empty (a save that never wrote anything)"
    for item in items:
      if not (path / item).is_dir() or not any((path / item).iterdir()):
        return f"the item {item}/ is missing or empty"
    return None

  def _set_aside(self, steps: list[int]) -> list[int]:
    """Move step directories to `<directory>/corrupt/<step>` (process 0), then rescan."""
    if jax.process_index() == 0:
      corrupt = self.directory / CORRUPT_DIR
      for step in steps:
        source, target, n = self.directory / str(step), corrupt / str(step), 1
        while target.exists():
          target, n = corrupt / f"{step}.{n}", n + 1
        try:
          corrupt.mkdir(exist_ok=True)
          source.rename(target)
        except OSError as e:  # Left in place, the step would block saving its number again.
          raise CheckpointError(
            f"cannot move the unusable checkpoint step {step} to {target} ({e}); move or "
            f"delete {source} by hand and rerun"
          ) from None
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("jaxsae.checkpoint.set_aside")
    self._manager.reload()
    return steps

  def wait(self) -> None:
    """Block until pending asynchronous saves are on disk."""
    with self._disk_full("the last checkpoint"):
      self._manager.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class _DurableRename(ocp.path.atomicity.AtomicRenameTemporaryPath):
  """Orbax's atomic rename, the step's tree fsynced before it (Orbax's commit markers and the
  renamed entry after)."""

  async def finalize(self):
    tmp, final = str(self.get()), str(self.get_final())
    local = os.path.isdir(tmp)  # Not a cloud bucket path: those need no fsync.
    if local:
      await asyncio.to_thread(fsync_tree, tmp)
    await super().finalize()
    for name in ("_CHECKPOINT_METADATA", "commit_success.txt", "", "..") if local else ():
      await asyncio.to_thread(fsync_path, os.path.join(final, name), missing_ok=True)


def _agreed(problem: str | None) -> str | None:
  """`problem`, or, in a multi-process run, a problem if any process has one."""
  if jax.process_count() == 1:
    return problem
  from jax.experimental import multihost_utils

  failed = np.asarray(multihost_utils.process_allgather(np.int32(problem is not None)))
  if problem is None and failed.any():
    return f"unreadable on process(es) {np.flatnonzero(failed).tolist()}"
  return problem


# ---- checksums ----------------------------------------------------------------------------------
def _leaf_checksum(x: jax.Array) -> jax.Array:
  """Two position-weighted wrapping uint32 sums of the bits of `x`: exact whatever the
  sharding (integer sums do not depend on the reduction order), and any single changed element
  changes both (the weights are odd)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  if x.dtype.itemsize == 8:  # Two uint32 words per element (a trailing axis of 2).
    u = jax.lax.bitcast_convert_type(x, jnp.uint32)
  else:
    u = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
    u = u.astype(jnp.uint32)
  index = jnp.zeros(u.shape, jnp.uint32)
  for axis, size in enumerate(u.shape):  # Row-major position, without a (resharding) reshape.
    index = index * jnp.uint32(size) + jax.lax.broadcasted_iota(jnp.uint32, u.shape, axis)
  w1 = index * jnp.uint32(2) + jnp.uint32(1)
  w2 = index * jnp.uint32(0x9E3779B1) | jnp.uint32(1)
  total = [jnp.sum(w * u, dtype=jnp.uint32) for w in (w1, w2)]
  return jnp.stack(total)


@jax.jit
def _checksums(leaves: list) -> list:
  return [_leaf_checksum(jnp.asarray(leaf)) for leaf in leaves]


def state_checksums(state: Any) -> dict[str, str]:
  """{key path: hex checksum} of every array of `state` (a jitted pass; waits for it)."""
  paths, leaves = [], []
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None or not (
      jnp.issubdtype(dtype, jnp.number)
      or dtype == jnp.bool_
      or jnp.issubdtype(dtype, jax.dtypes.prng_key)
    ):
      continue
    if jnp.issubdtype(dtype, jnp.complexfloating):
      continue
    paths.append(jax.tree_util.keystr(path))
    leaves.append(leaf)
  values = jax.device_get(_checksums(leaves))
  return {p: "".join(f"{int(w):08x}" for w in v) for p, v in zip(paths, values, strict=True)}


def _shapes_by_path(tree: Any) -> dict[str, tuple[int, ...]]:
  """{"params/topk/W_dec": shape} for every leaf with a shape (dict keys, attribute names and
  sequence indices alike, so a saved tree's metadata and a live state line up)."""

  def name(key) -> str:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)

  leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
  return {
    "/".join(name(k) for k in path): tuple(leaf.shape)
    for path, leaf in leaves
    if hasattr(leaf, "shape")
  }


# ---- quiet failures -----------------------------------------------------------------------------
def _one_line(e: BaseException) -> str:
  """An exception as one short line: its root cause, without tensorstore's spec dumps."""
  seen = {id(e)}
  while e.__cause__ is not None and id(e.__cause__) not in seen:
    e = e.__cause__
    seen.add(id(e))
  text = " ".join(str(e).split())
  text = re.sub(r" ?(\[tensorstore_spec|See full TensorStore details:).*$", "", text)
  if len(text) > 300:
    text = "…" + text[-300:]
  return f"{type(e).__name__}: {text}"


def _quiet_orphaned_reads() -> None:
  """After a failed restore, tensorstore still finishes the other reads of that step and hands
  them to Orbax's closed event loop, which prints a traceback per read ("Event loop is closed",
  "Future exception was never retrieved", "Exception ignored in: <coroutine ...>"). Drop
  exactly those; everything else passes. (The hook is re-wrapped whenever someone, e.g.
  pytest, has replaced it.)"""
  previous = sys.unraisablehook
  if not getattr(previous, "_drops_orphaned_reads", False):

    def unraisable(info):
      closed_loop = str(info.exc_value) == "Event loop is closed"
      code = getattr(info.object, "cr_code", None)  # A read coroutine closed mid-failure.
      if closed_loop or (code is not None and "orbax" in code.co_filename):
        return
      previous(info)

    unraisable._drops_orphaned_reads = True
    sys.unraisablehook = unraisable
  logger = logging.getLogger(asyncio.log.logger.name)
  if not any(isinstance(f, _OrphanedRead) for f in logger.filters):
    logger.addFilter(_OrphanedRead())


def _collect_orphans() -> None:
  """Free the failed restore's abandoned coroutines now, quietly, rather than at some later
  garbage collection with a "coroutine ... was never awaited" RuntimeWarning."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"coroutine .* was never awaited", RuntimeWarning)
    gc.collect()


class _OrphanedRead(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    orphan = str(record.msg).startswith("Future exception was never retrieved")
    return not (orphan and exc is not None and "tensorstore" in str(exc))
