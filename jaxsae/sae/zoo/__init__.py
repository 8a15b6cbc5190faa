"""The dictionary zoo: published SAEs and transcoders, read from their own formats.

`load(path_or_id)` (what `jaxsae.sae.export.load` calls) returns (SAEConfig, variables acting on
raw activations, metadata) for:

  "default" (a shipped SAE) or a jaxsae folder      config.json + sae.safetensors
  a SAELens folder                                  cfg.json + sae_weights.safetensors
  saelens:RELEASE/SAE_ID                            sae-lens's pretrained table → Hub files
  hf:OWNER/REPO/PATH                                a Hub file or folder of any format here
  a Gemma Scope params.npz (or its folder)          Gemma 2 JumpReLU SAEs
  a Gemma Scope 2 folder (params.safetensors)       resid_post / mlp_out / attn_out SAEs
  a sparsify hookpoint folder, or ROOT:HOOKPOINT    cfg.json + sae.safetensors

metadata always has "source_format" and "hook" (jaxsae's hook name, None when the source names
none), plus what the source records ("model", "path", "release", "repo_id", …).

Transcoders (Gemma Scope 2 `transcoder*` folders, Gemma Scope transcoders, sae-lens's
transcoder folders, sparsify folders with `transcode` or `skip_connection`, circuit-tracer
per-layer files `layer_{i}.safetensors` or SET:LAYER, circuit-tracer and Gemma Scope 2 CLT
folders) are refused by `load` and read by
`load_transcoder` into `Transcoder` / `CrossLayerTranscoder` records
(`jaxsae.sae.zoo.transcoders`). Pickle files (.pt, .pth, .bin, .ckpt) are refused unread, with
the one-line conversion to safetensors.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from jaxsae.errors import CheckpointError
from jaxsae.sae.zoo import circuit_tracer, gemma_scope, hooknames, saelens_transcoders
from jaxsae.sae.zoo.locate import TRANSCODER_KINDS, Found, locate
from jaxsae.sae.zoo.transcoders import CrossLayerTranscoder, Transcoder

__all__ = [
  "CrossLayerTranscoder",
  "Transcoder",
  "load",
  "load_replacement",
  "load_transcoder",
  "locate",
]


def _source(found: Found) -> dict[str, Any]:
  meta: dict[str, Any] = {"path": str(found.path)}
  if found.release is not None:
    r = found.release
    meta.update(release=r.release, sae_id=r.sae_id, repo_id=r.repo_id, model=r.model)
  if found.repo_id is not None:
    meta["repo_id"] = found.repo_id
  return meta


def _transcoder_error(found: Found) -> CheckpointError:
  return CheckpointError(
    f"{found.path} holds a transcoder ({found.kind}), which maps one hook to another; jaxsae's "
    "SAE modules do not yet. Read it with jaxsae.sae.zoo.load_transcoder"
  )


def _saelens_meta(path) -> dict[str, Any]:
  from jaxsae.sae import saelens

  cfg = json.loads((path / "cfg.json").read_text())
  inner = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
  hook = inner.get("hook_name", cfg.get("hook_name"))
  norm = saelens.normalization(cfg)
  return {
    "hook": hooknames.valid(hook),
    "model": inner.get("model_name", cfg.get("model_name")),
    "normalize_activations": None if norm == "none" else norm,
  }


def load(path_or_id, cache_dir=None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """(SAEConfig, variables on raw activations, metadata) of any SAE the module docstring
  lists; `cache_dir` overrides the Hub cache for release ids."""
  from jaxsae.sae import export, saelens, sparsify_format

  found = locate(path_or_id, cache_dir)
  source = _source(found)
  if found.kind == "jaxsae":
    config, variables, metadata = export.load_folder(found.path)
    return config, variables, {"source_format": "jaxsae", "hook": None, **metadata}
  if found.kind in TRANSCODER_KINDS:
    raise _transcoder_error(found)
  if found.kind == "saelens" and saelens_transcoders.architecture(found.path):
    raise _transcoder_error(dataclasses.replace(found, kind="saelens_transcoder"))
  if found.kind == "saelens":
    config, variables = saelens.load(
      found.path, found.release and found.release.norm_scaling_factor
    )
    meta = {**source, **{k: v for k, v in _saelens_meta(found.path).items() if v}}
    return config, variables, {"source_format": "saelens", "hook": None, **meta}
  if found.kind == "sparsify" and sparsify_format.is_transcoder(found.path):
    raise _transcoder_error(dataclasses.replace(found, kind="sparsify_transcoder"))
  if found.kind == "sparsify":
    config, variables = sparsify_format.load(found.path)
    hook = hooknames.from_sparsify_hookpoint(found.path.name)
    meta = {"source_format": "sparsify", "hook": hook, "hookpoint": found.path.name}
    return config, variables, {**meta, **source}
  # Gemma Scope, Gemma 2 or 3: the file says whether it is an SAE or a transcoder.
  desc, tensors = gemma_scope.read(found.path, found.release and found.release.repo_id)
  if desc.pop("kind") == "transcoder":
    raise _transcoder_error(dataclasses.replace(found, kind=desc["source_format"]))
  desc.pop("hook_out")
  config, variables = gemma_scope.to_sae(tensors, found.path)
  return config, variables, {**desc, **{k: v for k, v in source.items() if v}}


def load_replacement(paths_or_ids, cache_dir=None) -> list[Transcoder] | CrossLayerTranscoder:
  """The dictionaries of a replacement model (`jaxsae.evals.replacement`): a CLT, every layer
  of a circuit-tracer per-layer set folder, or a list of per-layer transcoders (paths or ids,
  first layer first)."""
  if isinstance(paths_or_ids, (list, tuple)) and len(paths_or_ids) == 1:
    paths_or_ids = paths_or_ids[0]  # One name: a set, a CLT or a single transcoder, as below.
  if isinstance(paths_or_ids, (list, tuple)):
    return [load_transcoder(p, cache_dir) for p in paths_or_ids]
  found = locate(paths_or_ids, cache_dir)
  if found.kind == "circuit_tracer_set":
    cfg = circuit_tracer.read_config(found.path)
    return [
      circuit_tracer.read_layer(found.path / f"layer_{layer}.safetensors", cfg)
      for layer in circuit_tracer.layers(found.path)
    ]
  loaded = load_transcoder(paths_or_ids, cache_dir)
  return loaded if isinstance(loaded, CrossLayerTranscoder) else [loaded]


def load_transcoder(path_or_id, cache_dir=None) -> Transcoder | CrossLayerTranscoder:
  """The transcoder a path or id names (see the module docstring); a circuit-tracer set folder
  needs its layer chosen as SET:LAYER."""
  from jaxsae.sae import sparsify_format

  found = locate(path_or_id, cache_dir)
  source = _source(found)
  if found.kind == "circuit_tracer_layer":
    tc = circuit_tracer.read_layer(found.path)
  elif found.kind == "saelens" and saelens_transcoders.architecture(found.path):
    tc = saelens_transcoders.read(found.path)
  elif found.kind == "sparsify" and sparsify_format.is_transcoder(found.path):
    tc = sparsify_format.read_transcoder(found.path)
  elif found.kind == "circuit_tracer_clt":
    tc = circuit_tracer.read_clt(found.path)
  elif found.kind == "gemma_scope_2_clt":
    tc = gemma_scope.read_clt(found.path)
  elif found.kind == "circuit_tracer_set":
    layers = circuit_tracer.layers(found.path)
    raise CheckpointError(
      f"{found.path} holds one transcoder per layer {layers}; choose one as "
      f"{found.path}:{layers[0]}"
    )
  elif found.kind in ("gemma_scope", "gemma_scope_2"):
    desc, t = gemma_scope.read(found.path, found.release and found.release.repo_id)
    if desc.pop("kind") != "transcoder":
      raise CheckpointError(
        f"{found.path} is an SAE (one hook in and out): load it with jaxsae.sae.export.load"
      )
    meta = {k: v for k, v in desc.items() if k not in ("hook", "hook_out")}
    return gemma_scope.to_transcoder(t, desc["hook"], desc["hook_out"], {**meta, **source})
  else:
    raise CheckpointError(
      f"{found.path} is a {found.kind} SAE, not a transcoder: load it with jaxsae.sae.export.load"
    )
  tc.metadata.update({k: v for k, v in source.items() if v})
  return tc
