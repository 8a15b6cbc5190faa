"""Loading what is on disk: nothing is unpickled, and a store or saved file of another format,
shape or version is refused with an error that names the file and the fix."""

import ast
import json
import shutil

import numpy as np
import pytest

from conftest import REPO
from jaxsae.activations import harvest as harvest_lib
from jaxsae.activations.store import ActivationStore
from jaxsae.errors import CheckpointError, JaxsaeError
from jaxsae.models import pretrained
from jaxsae.sae import experiment_data, export

UNPICKLING_CALLS = {"pickle.load", "pickle.loads", "torch.load", "dill.load", "joblib.load"}


def _calls(tree):
  for node in ast.walk(tree):
    if isinstance(node, ast.Call):
      yield node, ast.unparse(node.func)


@pytest.mark.parametrize("package", ["jaxsae", "experiments"])
def test_no_code_path_unpickles(package):
  """Every np.load passes allow_pickle=False; pickle, torch.load and friends are never called."""
  offenders = []
  for path in sorted((REPO / package).rglob("*.py")):
    for call, name in _calls(ast.parse(path.read_text(), str(path))):
      where = f"{path.relative_to(REPO)}:{call.lineno}"
      if name in UNPICKLING_CALLS or name.startswith("pickle."):
        offenders.append(f"{where} calls {name}")
      if name in ("np.load", "numpy.load", "jnp.load"):
        flags = {k.arg: ast.unparse(k.value) for k in call.keywords}
        if flags.get("allow_pickle") != "False":
          offenders.append(f"{where} calls {name} without allow_pickle=False")
  assert not offenders, offenders


def test_an_npy_of_objects_is_refused_not_unpickled(tmp_path):
  path = tmp_path / "rows.npy"
  np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
  data = type("Data", (), {"source": f"npy:{path}"})()
  with pytest.raises(JaxsaeError, match="not a plain .npy array"):
    experiment_data.open_source(data)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
  lm = pretrained.load("default")
  windows = np.random.default_rng(0).integers(0, 256, (4, 32)).astype(np.int32)
  directory = tmp_path_factory.mktemp("store")
  harvest_lib.harvest(lm, windows, ["blocks.0.resid_post"], directory, progress=False)
  return directory


def test_a_store_of_another_format_version_or_without_metadata_is_refused(store_dir, tmp_path):
  copy = tmp_path / "store"
  shutil.copytree(store_dir, copy)
  meta = json.loads((copy / "store.json").read_text())
  (copy / "store.json").write_text(json.dumps({**meta, "format": "jaxsae-store/0"}))
  refused = r"has format 'jaxsae-store/0', not a jaxsae activations.*re-harvest"
  with pytest.raises(CheckpointError, match=refused):
    ActivationStore.open(copy)
  (copy / "store.json").write_text('{"format": ')
  with pytest.raises(CheckpointError, match="not valid JSON"):
    ActivationStore.open(copy)
  (copy / "store.json").unlink()
  with pytest.raises(CheckpointError, match="harvest one first"):
    ActivationStore.open(copy)


def test_an_sae_of_another_shape_or_format_is_refused(tmp_path):
  source = export.resolve("default")
  copy = tmp_path / "sae"
  shutil.copytree(source, copy)
  doc = json.loads((copy / "config.json").read_text())
  wider = {**doc, "sae": {**doc["sae"], "n_latents": 2048}}
  (copy / "config.json").write_text(json.dumps(wider))
  with pytest.raises(CheckpointError, match="W_dec.*2048|2048.*W_dec|does not match"):
    export.load(copy)
  (copy / "config.json").write_text(json.dumps({**doc, "format": "jaxsae-sae/0"}))
  with pytest.raises(CheckpointError, match="jaxsae-sae/0"):
    export.load(copy)
  (copy / "config.json").write_text(json.dumps(doc))
  header = (copy / "sae.safetensors").read_bytes()
  (copy / "sae.safetensors").write_bytes(header[:100])  # A truncated download.
  with pytest.raises(CheckpointError, match="not a readable safetensors file"):
    export.load(copy)


def test_a_damaged_store_chunk_names_the_store_and_the_fix(store_dir, tmp_path):
  copy = tmp_path / "store"
  shutil.copytree(store_dir, copy)
  store = ActivationStore.open(copy)
  chunk = sorted((copy / "acts" / "blocks.0.resid_post" / "c").rglob("*"))[-1]
  chunk.write_bytes(chunk.read_bytes()[:50])  # Truncated.
  with pytest.raises(CheckpointError, match=r"blocks.0.resid_post rows .*delete .* harvest it"):
    store.read_rows("blocks.0.resid_post", 0, store.n_rows)
  with pytest.raises(CheckpointError, match="The store is damaged"):
    store.gather("blocks.0.resid_post", [store.n_rows - 1])


def _sae_config(architecture="topk", n_latents=64):
  from jaxsae.sae import train_config

  c = train_config.base_config(architecture)
  c.sae.n_latents, c.train.batch_size, c.train.steps = n_latents, 128, 4
  c.train.log_every = c.train.checkpoint_every = 2
  c.optim.warmup_steps = 1
  c.data.normalization_samples, c.data.b_dec_samples = 512, 128
  if architecture == "topk":
    c.sae.k = 4
  return c


@pytest.mark.slow
def test_a_checkpoint_of_another_shape_or_architecture_is_refused_not_skipped(tmp_path):
  from jaxsae.sae import row_sources
  from jaxsae.sae import train as train_lib

  rows = np.random.default_rng(0).normal(size=(2048, 16)).astype(np.float32)
  train_lib.train(_sae_config(), tmp_path, row_sources.ArraySource(rows))
  wider = _sae_config(n_latents=128)
  wider.train.steps = 6
  with pytest.raises(CheckpointError, match=r"another shape .*W_dec: saved \(1, 64, 16\), this"):
    train_lib.train(wider, tmp_path, row_sources.ArraySource(rows))
  wide_rows = np.random.default_rng(0).normal(size=(2048, 32)).astype(np.float32)
  with pytest.raises(CheckpointError, match=r"saved \(1, 16\), this run \(1, 32\)"):
    train_lib.train(_sae_config(), tmp_path, row_sources.ArraySource(wide_rows))
  relu = _sae_config("relu")
  relu.train.steps = 6
  with pytest.raises(CheckpointError, match="another state: this run's .*relu.* not saved"):
    train_lib.train(relu, tmp_path, row_sources.ArraySource(rows))
  assert not (tmp_path / "checkpoints" / "corrupt").exists()  # Refused, not set aside.
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]
