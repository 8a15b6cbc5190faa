"""A full disk while saving: a DiskFullError naming the directory and the fix, and nothing saved
before is lost. The disk is a tiny tmpfs mounted in a private mount namespace of a child
(`unshare -rm`, util-linux; the test machines allow unprivileged user namespaces)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # Subprocesses: the fast tier (-m "not slow") skips them.

CHILD = textwrap.dedent(
  """
  import json, pathlib, sys
  import numpy as np
  import jax.numpy as jnp
  from jaxsae.activations.store import ActivationStore
  from jaxsae.checkpoint import Checkpointer
  from jaxsae.errors import DiskFullError

  out = {}
  root = pathlib.Path(sys.argv[1])
  store = ActivationStore.create(root / "a" / "store", hooks={"h": 64}, n_rows=4096,
    rows_table=np.zeros((4096, 3), np.int32), windows=np.zeros((4, 8), np.int32), chunk_rows=256)
  try:
    for i in range(16):
      store.write_chunk_async("h", i, np.full((256, 64), i, np.float32)).result()
      store.update_meta(rows_written=(i + 1) * 256)
  except DiskFullError as e:
    out["store_error"] = str(e)
  reopened = ActivationStore.open(root / "a" / "store")
  written = reopened.meta["rows_written"]
  out["rows_written"] = written
  out["rows_intact"] = bool(
    (reopened.read_rows("h", 0, written) == np.repeat(np.arange(written // 256), 256)[:, None]).all()
  )
  state = {"w": jnp.ones((64, 256))}
  try:
    with Checkpointer(root / "b", save_every=1, keep=3) as c:
      for step in range(1, 20):
        c.save(step, state, metadata={"step": step})
  except DiskFullError as e:
    out["checkpoint_error"] = str(e)
  c = Checkpointer(root / "b", save_every=1)
  restored, meta = c.restore({"w": jnp.zeros((64, 256))})
  out["steps"], out["restored_step"] = c.all_steps(), meta["step"]
  out["restored_intact"] = bool((restored["w"] == 1).all())
  print("RESULT " + json.dumps(out))
  """
)


def test_full_disk_raises_a_clear_error_and_keeps_what_was_saved(tmp_path):
  assert shutil.which("unshare"), "this test needs util-linux's unshare to mount a small tmpfs"
  (tmp_path / "child.py").write_text(CHILD)
  disk = tmp_path / "disk"
  disk.mkdir()
  mounts = " && ".join(
    f"mkdir -p {disk}/{d} && mount -t tmpfs -o size={size} tmpfs {disk}/{d}"
    for d, size in (("a", "600k"), ("b", "200k"))
  )
  probe = subprocess.run(["unshare", "-rm", "sh", "-c", mounts], capture_output=True, text=True)
  assert probe.returncode == 0, f"cannot mount a tmpfs in a private namespace: {probe.stderr}"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  run = subprocess.run(
    [
      "unshare",
      "-rm",
      "sh",
      "-c",
      f'{mounts} && exec "$0" {tmp_path}/child.py {disk}',
      sys.executable,
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
  assert run.returncode == 0 and lines, run.stderr[-3000:]
  out = json.loads(lines[0][len("RESULT ") :])
  assert "no space left on the device of" in out["store_error"], out
  assert "rerun the same command" in out["store_error"]
  assert 0 < out["rows_written"] < 4096 and out["rows_intact"], out
  assert "no space left on the device of" in out["checkpoint_error"], out
  assert out["steps"] and out["restored_step"] == max(out["steps"]) and out["restored_intact"], out
