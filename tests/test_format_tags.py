"""jaxsae.format_tags: every writer stamps "jaxsae-<kind>/<version>", every reader also takes the
tags files were saved with before (the shipped ones keep theirs), and any other tag is refused
with an error naming the file, what it holds, what this jaxsae reads and the fix."""

import json
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open

from conftest import REPO, tiny_model_config
from jaxsae import format_tags
from jaxsae.activations.store import ActivationStore
from jaxsae.errors import CheckpointError
from jaxsae.models import pretrained
from jaxsae.models import transformer as T
from jaxsae.sae import export, registry
from jaxsae.sae.config import SAEConfig
from jaxsae.sparse import bridges as br
from jaxsae.sparse.pruned_circuit import Circuit
from jaxsae.text.tokenizer import ByteTokenizer


def _model(path):
  cfg = tiny_model_config()
  return pretrained.save(
    path, cfg, T.init_params(T.Transformer(cfg), jax.random.key(0)), ByteTokenizer()
  )


def _sae(path):
  config = SAEConfig("topk", d_in=8, n_latents=32, k=4)
  variables = nn.meta.unbox(registry.build(config).init(jax.random.key(1), jnp.zeros((1, 8))))
  return export.save(path, config, variables, 1.0)


def _store(path):
  store = ActivationStore.create(
    path,
    hooks={"h": 2},
    n_rows=4,
    rows_table=np.zeros((4, 3), np.int32),
    windows=np.zeros((1, 4), np.int32),
    chunk_rows=4,
  )
  store.write_rows("h", 0, np.zeros((4, 2), np.float32))
  return store


def _bridges(path):
  config = br.BridgeConfig(sites=("blocks.0.resid_pre",))
  return br.save_bridges(path, br.init_bridges(4, 6, config.sites, 2, jax.random.key(0)), config)


def _circuit(path):
  kept = {"blocks.0.attn.in": np.array([True, False, True])}
  return Circuit("task", "model", kept, {"blocks.0.attn.in": np.array([1.0, -1.0, 0.5])}).save(path)


def _doc(path):
  return json.loads(path.read_text())


@pytest.mark.slow
def test_every_writer_stamps_the_one_scheme(tmp_path):
  model = _doc(_model(tmp_path / "m") / "config.json")
  assert model["format"] == "jaxsae-lm/1" and "format_version" not in model
  sae = _sae(tmp_path / "s")
  assert _doc(sae / export.CONFIG_FILE)["format"] == "jaxsae-sae/1"
  with safe_open(str(sae / export.WEIGHTS_FILE), "np") as f:
    assert f.metadata()["format"] == "jaxsae-sae/1"
  assert _doc(_store(tmp_path / "a").directory / "store.json")["format"] == "jaxsae-activations/1"
  assert _doc(_bridges(tmp_path / "b") / br.CONFIG_FILE)["format"] == "jaxsae-bridges/1"
  assert _doc(_circuit(tmp_path / "c.json"))["format"] == "jaxsae-circuit/1"
  assert all(
    format_tags.tag(kind) == f"jaxsae-{kind}/{v}" for kind, v in format_tags.VERSIONS.items()
  )


def test_the_shipped_files_keep_their_old_tags_and_load():
  for name in ("default", "sparse", "dense", "dense_matched"):
    doc = _doc(pretrained.resolve(name) / "config.json")
    assert (doc["format"], doc["format_version"]) == ("jaxsae.lm", 1)
    assert pretrained.load(name).config.vocab_size == doc["model"]["vocab_size"]
  assert _doc(export.resolve("default") / export.CONFIG_FILE)["format"] == "jaxsae-sae/1"
  assert export.load("default")[0].n_latents == 1024
  published = sorted((REPO / "docs" / "circuits" / "circuits").rglob("*.json"))
  assert published and all(_doc(p)["format"] == "jaxsae.circuit" for p in published)
  assert all(Circuit.load(p).n_nodes > 0 for p in published)


@pytest.mark.parametrize("kind", ["lm", "bridges", "circuit"])
@pytest.mark.slow
def test_a_file_written_with_the_old_tag_loads(kind, tmp_path):
  """Rewritten to "jaxsae.<kind>" + "format_version": 1, each file loads as it did."""
  write, load, config_file = {
    "lm": (_model, pretrained.load, "config.json"),
    "bridges": (_bridges, br.load_bridges, br.CONFIG_FILE),
    "circuit": (_circuit, Circuit.load, None),
  }[kind]
  path = write(tmp_path / "new")
  old = tmp_path / "old"
  (shutil.copytree if path.is_dir() else shutil.copy)(path, old)
  doc_file = old / config_file if config_file else old
  legacy, version = format_tags.LEGACY[kind]
  doc_file.write_text(json.dumps({**_doc(doc_file), "format": legacy, "format_version": version}))
  jax.tree.map(np.testing.assert_array_equal, _loaded(load(old)), _loaded(load(path)))


def _loaded(thing):
  """The arrays of whatever a loader returned, for comparison."""
  if isinstance(thing, pretrained.LanguageModel):
    return thing.params
  if isinstance(thing, Circuit):
    return {"kept": dict(thing.kept), "scores": dict(thing.scores)}
  return thing[0].weights


def test_an_unknown_tag_names_the_file_what_it_holds_what_is_read_and_the_fix(tmp_path):
  model = _model(tmp_path / "m")
  doc = _doc(model / "config.json")
  reads = "this jaxsae reads 'jaxsae-lm/1' (or the older 'jaxsae.lm' version 1); re-export"
  for bad, said in (
    ("jaxsae.lm-v2", "has format 'jaxsae.lm-v2', not a jaxsae lm file"),
    ("jaxsae-lm/2", "has format 'jaxsae-lm/2', written by a newer jaxsae (upgrade jaxsae"),
    ("jaxsae-sae/1", "has format 'jaxsae-sae/1': a jaxsae sae file"),
  ):
    (model / "config.json").write_text(json.dumps({**doc, "format": bad}))
    with pytest.raises(CheckpointError) as e:
      pretrained.load(model)
    assert all(part in str(e.value) for part in (str(model / "config.json"), said, reads))
  (model / "config.json").write_text(
    json.dumps({**doc, "format": "jaxsae.lm", "format_version": 0})
  )
  with pytest.raises(CheckpointError, match="'jaxsae.lm' version 0, written by an older jaxsae"):
    pretrained.load(model)
  store = _store(tmp_path / "a").directory
  meta = _doc(store / "store.json")
  (store / "store.json").write_text(json.dumps({**meta, "format": "jaxsae-activations/7"}))
  with pytest.raises(
    CheckpointError, match=re.escape(f"the store at {store} ") + ".*newer.*re-harv"
  ):
    ActivationStore.open(store)


def test_problem_and_parse_read_both_schemes():
  assert format_tags.parse({"format": "jaxsae-circuit-view/1"}) == ("circuit-view", 1)
  assert format_tags.parse({"format": "jaxsae.circuit_view", "format_version": 1}) == (
    "circuit-view",
    1,
  )
  assert format_tags.parse({"format": "jaxsae.circuit_view"}) == ("circuit-view", -1)
  assert format_tags.parse({"model_type": "gpt2"}) is None
  for kind in format_tags.VERSIONS:
    assert format_tags.problem({"format": format_tags.tag(kind)}, kind) is None
  for kind, (legacy, version) in format_tags.LEGACY.items():
    assert format_tags.problem({"format": legacy, "format_version": version}, kind) is None
    assert "version 2" in format_tags.problem({"format": legacy, "format_version": 2}, kind)
