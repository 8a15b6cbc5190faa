"""What a path or id names: which dictionary format, where on disk, and which member of a
folder holding several (`PATH:CHOICE`). Pickle files are refused here, unread.

Ids: a shipped SAE's name ("default"), `saelens:RELEASE/SAE_ID` (`resolve`), `hf:REPO/PATH` (a
Hub file or folder, `hub`), or a local path, optionally followed by `:CHOICE` when it holds
several dictionaries: a sparsify checkpoint root's hookpoint (`run:layers.6`) or a
circuit-tracer set's layer (`tcs:3` or `tcs:layer_3`).
"""

from __future__ import annotations

import dataclasses
import pathlib

from jaxsae.errors import CheckpointError
from jaxsae.sae.zoo import circuit_tracer, gemma_scope, hub, resolve

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
TRANSCODER_KINDS = (
  "circuit_tracer_layer",
  "circuit_tracer_set",
  "circuit_tracer_clt",
  "gemma_scope_2_clt",
)
LAYOUTS = (
  "jaxsae: config.json + sae.safetensors",
  "SAELens: cfg.json + sae_weights.safetensors",
  "sparsify: cfg.json + sae.safetensors (or a checkpoint of such folders)",
  "Gemma Scope: params.npz",
  "Gemma Scope 2: params.safetensors (CLTs: params_layer_{i}.safetensors)",
  "circuit-tracer: layer_{i}.safetensors, or W_enc_{i}/W_dec_{i}.safetensors",
)


@dataclasses.dataclass(frozen=True)
class Found:
  kind: str
  path: pathlib.Path
  choice: str | None = None
  release: resolve.Release | None = None
  repo_id: str | None = None  # The Hub repo of an hf: id.


def refuse_pickle(file: pathlib.Path) -> CheckpointError:
  target = file.with_suffix(".safetensors")
  return CheckpointError(
    f"{file} is a pickle-based PyTorch file; jaxsae never unpickles (loading one can run "
    'arbitrary code). Convert it once, where you trust it: python -c "import torch, '
    f"safetensors.torch as s; s.save_file(torch.load('{file}', weights_only=True), "
    f"'{target}')\" and load the safetensors file's folder (with its config beside it)"
  )


def _split_choice(text: str) -> tuple[pathlib.Path, str | None]:
  path = pathlib.Path(text).expanduser()
  if path.exists() or ":" not in text:
    return path, None
  head, _, choice = text.rpartition(":")
  return pathlib.Path(head).expanduser(), choice


def _sparsify_folders(path: pathlib.Path) -> list[str]:
  return sorted(
    p.name
    for p in path.iterdir()
    if (p / "cfg.json").is_file() and (p / "sae.safetensors").is_file()
  )


def kind_of_file(path: pathlib.Path) -> tuple[str, pathlib.Path]:
  if path.suffix in PICKLE_SUFFIXES:
    raise refuse_pickle(path)
  if path.suffix == ".npz":
    return "gemma_scope", path
  if path.name == "params.safetensors":
    return "gemma_scope_2", path.parent
  if circuit_tracer.LAYER_FILE.fullmatch(path.name):
    return "circuit_tracer_layer", path
  if gemma_scope.CLT_FILE.fullmatch(path.name):
    raise CheckpointError(f"{path} is one layer of a Gemma Scope 2 CLT: pass its folder")
  if path.name in ("cfg.json", "config.json", "sae.safetensors", "sae_weights.safetensors"):
    return kind_of_folder(path.parent)
  raise CheckpointError(f"{path} is no dictionary file jaxsae knows; it reads {list(LAYOUTS)}")


def kind_of_folder(path: pathlib.Path) -> tuple[str, pathlib.Path]:
  has = lambda name: (path / name).is_file()  # noqa: E731
  if has("config.json") and has("sae.safetensors"):
    return "jaxsae", path
  if has("cfg.json") and has("sae_weights.safetensors"):
    return "saelens", path
  if has("cfg.json") and has("sae.safetensors"):
    return "sparsify", path
  if has("params.npz"):
    return "gemma_scope", path / "params.npz"
  if has("params.safetensors"):
    return "gemma_scope_2", path
  if has("W_enc_0.safetensors"):
    return "circuit_tracer_clt", path
  if circuit_tracer.layers(path):
    return "circuit_tracer_set", path
  if gemma_scope.clt_layers(path):
    return "gemma_scope_2_clt", path
  if _sparsify_folders(path):
    return "sparsify_root", path
  pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
  if pickles:
    raise refuse_pickle(pickles[0])
  raise CheckpointError(
    f"{path} holds no dictionary jaxsae reads: the files of every layout are missing "
    f"({'; '.join(LAYOUTS)})"
  )


def locate(text, cache_dir=None) -> Found:
  """The Found for a shipped name, a release id or a local path (see the module docstring)."""
  from jaxsae.sae import export

  text = str(text)
  if text in export.NAMED:
    return Found("jaxsae", export.resolve(text))
  if resolve.is_release_id(text):
    release = resolve.lookup(text)
    found = locate(resolve.fetch(release, cache_dir))
    return dataclasses.replace(found, release=release)
  if hub.is_hub_id(text):
    found = locate(hub.fetch(text, cache_dir))
    return dataclasses.replace(found, repo_id=hub.parse(text).repo_id)
  path, choice = _split_choice(text)
  if not path.exists():
    raise CheckpointError(
      f"{path} is missing; pass a dictionary's folder or file, a shipped name "
      f"({', '.join(export.NAMED)}), saelens:RELEASE/SAE_ID or hf:OWNER/REPO/PATH"
    )
  kind, where = kind_of_file(path) if path.is_file() else kind_of_folder(path)
  if kind == "sparsify_root":
    names = _sparsify_folders(where)
    if choice not in names:
      said = f"has no hookpoint {choice!r}" if choice else "holds several hookpoints"
      raise CheckpointError(
        f"{where} is a sparsify checkpoint that {said}; choose one of {names} as {where}:{names[0]}"
      )
    return Found("sparsify", where / choice)
  if kind == "circuit_tracer_set" and choice is not None:
    layer = choice.removeprefix("layer_")
    file = where / f"layer_{layer}.safetensors"
    if not file.is_file():
      raise CheckpointError(
        f"{where} has no layer {choice!r}; its layers are {circuit_tracer.layers(where)}"
      )
    return Found("circuit_tracer_layer", file)
  if choice is not None:
    raise CheckpointError(f"{where} holds one dictionary ({kind}); drop ':{choice}'")
  return Found(kind, where)
