"""A damaged newest checkpoint: restore falls back to the newest intact one (warning per skipped
step, bit-identical state), sets the damaged step aside so its number can be saved again, and
names every step's problem and the fix when none is intact. Training resumes after a fallback."""

import pathlib
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsae import sharding
from jaxsae.checkpoint import Checkpointer, CheckpointFallbackWarning
from jaxsae.errors import CheckpointError
from jaxsae.sae import row_sources, synthetic, train_config
from jaxsae.sae import train as sae_train
from jaxsae.text import pipeline
from jaxsae.train_state import TrainState

WINDOWS = pipeline.PackedWindows(np.arange(2000) % 257, 8)


def _state(step: int) -> TrainState:
  params = {"w": jax.random.normal(jax.random.key(step), (128, 128)), "b": jnp.full(8, step)}
  state = TrainState.create(params, optax.adam(1e-3))
  return state.replace(step=jnp.asarray(step, jnp.int32))


def _target():
  abstract = jax.eval_shape(lambda: _state(0))
  replicated = sharding.replicated(sharding.make_mesh(8, 1))
  return sharding.with_shardings(abstract, jax.tree.map(lambda _: replicated, abstract))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A checkpoint directory with steps 1, 2, 3 (with data positions), and what was saved."""
  root = tmp_path_factory.mktemp("saved") / "checkpoints"
  it = pipeline.train_batches(WINDOWS, 4, seed=0)
  with Checkpointer(root, save_every=1, keep=5) as ckpt:
    for step in (1, 2, 3):
      next(it)
      ckpt.save(step, _state(step), it, {"tokens": step})
  batches = pipeline.train_batches(WINDOWS, 4, seed=0)
  following = {step: next(batches)["tokens"] for step in range(5)}  # The batch after `step`.
  return root, following


def _copy(saved, tmp_path) -> pathlib.Path:
  root = tmp_path / "checkpoints"
  shutil.copytree(saved[0], root)
  return root


def _array_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
  """The OCDBT data files of the state item (the merged database's and each process's: which
  of them hold the arrays depends on their sizes)."""
  return sorted(p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d")


def _truncate(step_dir):
  for f in _array_files(step_dir):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_bits(step_dir):
  for f in _array_files(step_dir):
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))


def _swap_arrays(step_dir):
  """Well-formed array files with other values (step 2's), as a bit flip inside an array's raw
  bytes leaves them: no decoder can tell, only the checksums saved with step 3."""
  shutil.rmtree(step_dir / "state")
  shutil.copytree(step_dir.parent / "2" / "state", step_dir / "state")


def _delete_manifest(step_dir):
  (step_dir / "state" / "manifest.ocdbt").unlink()


def _delete_metadata_json(step_dir):
  (step_dir / "meta" / "metadata").unlink()


def _garble_metadata_json(step_dir):
  (step_dir / "meta" / "metadata").write_text('{"tokens": 3, "_state_chec')


def _empty(step_dir):
  shutil.rmtree(step_dir)
  step_dir.mkdir()


DAMAGES = {  # How step 3 is damaged, and what the warning then says (None: varies).
  "truncated array files": (_truncate, "not valid for value of size"),
  "a flipped bit in each array file": (_flip_bits, None),
  "array files with other values": (
    _swap_arrays,
    "checksum mismatch in .step, .params['b'], .params['w'] (",
  ),
  "deleted OCDBT manifest": (_delete_manifest, "NOT_FOUND"),
  "deleted metadata JSON": (_delete_metadata_json, "FileNotFoundError"),
  "garbled metadata JSON": (_garble_metadata_json, "JSONDecodeError"),
  "empty step directory": (_empty, "the step directory is empty"),
}


def _assert_state_equal(restored, expected):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(expected))


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_step_falls_back_to_the_intact_one(saved, tmp_path, damage, capfd):
  root = _copy(saved, tmp_path)
  corrupt, reason = DAMAGES[damage]
  corrupt(root / "3")
  it = pipeline.train_batches(WINDOWS, 4, seed=0)
  with Checkpointer(root, save_every=1) as ckpt:
    with pytest.warns(CheckpointFallbackWarning) as caught:
      state, meta = ckpt.restore(_target(), it)
    _assert_state_equal(state, _state(2))  # Bit for bit what step 2 saved.
    assert meta == {"tokens": 2}
    np.testing.assert_array_equal(next(it)["tokens"], saved[1][2])  # The data position too.
    skipped, summary = (str(w.message) for w in caught if w.category is CheckpointFallbackWarning)
    assert skipped.startswith(f"checkpoint step 3 in {root} is unusable")
    assert reason is None or reason in skipped
    assert "\n" not in skipped and "restored checkpoint step 2 instead of 3" in summary
    # Step 3 is set aside, so the resumed run can save step 3 again.
    assert ckpt.all_steps() == [1, 2] and (root / "corrupt" / "3").is_dir()
    assert ckpt.save(3, _state(30), it, {"tokens": 30})
  with Checkpointer(root, save_every=1) as ckpt, warnings.catch_warnings():
    warnings.simplefilter("error")  # Now intact: no warning.
    state, meta = ckpt.restore(_target())
  _assert_state_equal(state, _state(30))
  assert meta == {"tokens": 30}
  assert "Traceback" not in capfd.readouterr().err  # Nothing from inside orbax.


def test_the_temporary_directory_of_a_killed_save_is_ignored(saved, tmp_path):
  root = _copy(saved, tmp_path)
  partial = root / "4.orbax-checkpoint-tmp-1700000000000000"
  shutil.copytree(root / "3", partial)
  _truncate(partial)
  with Checkpointer(root, save_every=1) as ckpt, warnings.catch_warnings():
    warnings.simplefilter("error")
    assert ckpt.all_steps() == [1, 2, 3]
    state, _ = ckpt.restore(_target())
    _assert_state_equal(state, _state(3))
    assert ckpt.save(4, _state(4))  # The killed save's step number is free.
  with Checkpointer(root, save_every=1) as ckpt:
    _assert_state_equal(ckpt.restore(_target())[0], _state(4))


def test_several_damaged_steps_are_each_named_and_the_oldest_intact_one_restored(saved, tmp_path):
  root = _copy(saved, tmp_path)
  _empty(root / "3")
  _garble_metadata_json(root / "2")
  with Checkpointer(root, save_every=1) as ckpt, pytest.warns(CheckpointFallbackWarning) as caught:
    state, _ = ckpt.restore(_target())
  _assert_state_equal(state, _state(1))
  messages = [str(w.message) for w in caught if w.category is CheckpointFallbackWarning]
  assert "step 3" in messages[0] and "step 2" in messages[1]
  assert "moved the unusable step(s) 3, 2" in messages[2]
  assert sorted(p.name for p in (root / "corrupt").iterdir()) == ["2", "3"]


def test_no_intact_step_names_every_problem_and_the_fix(saved, tmp_path):
  root = _copy(saved, tmp_path)
  _truncate(root / "3")
  _empty(root / "2")
  _delete_manifest(root / "1")
  with Checkpointer(root, save_every=1) as ckpt:
    with pytest.warns(CheckpointFallbackWarning), pytest.raises(CheckpointError) as info:
      ckpt.restore(_target())
    with pytest.raises(CheckpointError, match="checkpoint step 2 in .* cannot be restored: the st"):
      ckpt.restore(_target(), step=2)  # A named step never falls back.
  text = str(info.value)
  assert f"no intact checkpoint in {root}" in text
  for line in ("step 3: ValueError", "step 2: the step directory is empty", "step 1: ValueError"):
    assert line in text
  assert f"Delete {root} to start the run over, or point the run at another workdir" in text
  assert not (root / "corrupt").exists()  # Nothing is moved when nothing was restored.


@pytest.mark.slow
def test_sae_training_resumes_after_a_fallback_and_finishes_like_an_uninterrupted_run(tmp_path):
  c = train_config.base_config()
  c.sae.n_latents, c.sae.k, c.sae.k_aux = 64, 4, 0
  c.train.batch_size, c.train.steps, c.train.log_every, c.train.checkpoint_every = 128, 8, 4, 4
  c.optim.warmup_steps, c.data.normalization_samples, c.data.b_dec_samples = 2, 1024, 256
  source = row_sources.ArraySource(synthetic.SyntheticFeatures(d=16, n_features=32).generate(4096))
  full = sae_train.train(c, tmp_path, source)
  checkpoints = tmp_path / "checkpoints"
  _truncate(checkpoints / "8")  # The final checkpoint is damaged: the rerun resumes from 4.
  with pytest.warns(CheckpointFallbackWarning) as caught:
    resumed = sae_train.train(c, tmp_path, source)
  assert [
    str(w.message).split(":")[0] for w in caught if w.category is CheckpointFallbackWarning
  ] == [
    f"checkpoint step 8 in {checkpoints} is unusable, trying an older one",
    f"restored checkpoint step 4 instead of 8; moved the unusable step(s) 8 to "
    f"{checkpoints}/corrupt (move one back to retry it)",
  ]
  assert [h["step"] for h in resumed.history] == [8]  # Steps 5-8 trained again.
  _assert_state_equal(resumed.state, full.state)
  with Checkpointer(checkpoints, save_every=1) as ckpt:
    assert ckpt.all_steps() == [4, 8]  # Step 8 saved again; the damaged one is set aside.
  assert (checkpoints / "corrupt" / "8").is_dir()
