"""Gemma Scope dictionaries: Gemma 2's `params.npz` and Gemma 3's (Gemma Scope 2) folders of
`params.safetensors` (+ an optional config.json).

Both store W_enc [d_in, n], W_dec [n, d_out], b_enc, b_dec and a raw JumpReLU threshold θ
(Gemma Scope 2 spells the weights w_enc / w_dec, and its affine transcoders add
`affine_skip_connection` [d_in, d_out]). Their SAEs encode without centering,

    pre = x W_enc + b_enc ;  z = pre · 1[pre > θ] ;  x̂ = z W_dec + b_dec,

which is jaxsae's JumpReLU, pre = (x − b_dec) W_enc + b_enc', with b_enc' = b_enc + b_dec W_enc
(exact up to rounding). θ is clamped at 0: the Gemma Scope tutorial and sae-lens compute
ReLU(pre) · 1[pre > θ], the same function for the published θ > 0 and for any θ once clamped.
Transcoders (`transcoder*` folders, the `…-transcoders` repo) become `Transcoder` records, and
cross-layer transcoders (a `clt/…` folder of `params_layer_{i}.safetensors`, w_dec [n, L, d]) a
`CrossLayerTranscoder` whose layer-i decoder is w_dec[:, i:] (as circuit-tracer's
load_gemma_scope_2_clt reads them: writes to earlier layers are dropped).
Gemma 2's embedding SAEs were trained on the unscaled embedding e, while embed.tok (as
TransformerLens's hook_embed) is √d·e: W_enc / √d and W_dec, b_dec · √d. (sae-lens scales W_enc
and W_dec the same way but leaves b_dec, so its reconstructions differ from the exact rescaled
SAE by (√d − 1)·b_dec; its latents are equal.) npz files are read with allow_pickle=False.

`write_transcoder` and `write_clt` export transcoders and CLTs in Gemma Scope 2's layout (what
circuit-tracer's load_gemma_scope_2_transcoder / load_gemma_scope_2_clt and sae-lens's Gemma 3
loader read). Gemma Scope 2 holds JumpReLU only: a ReLU dictionary is written as JumpReLU with
θ = 0 (the same function); TopK ones are refused.
"""

from __future__ import annotations

import json
import pathlib
import re
import zipfile
from typing import Any

import numpy as np

from jaxsae.errors import CheckpointError
from jaxsae.sae.config import SAEConfig
from jaxsae.sae.zoo import hooknames
from jaxsae.sae.zoo.transcoders import CrossLayerTranscoder, Transcoder

NPZ_FILE = "params.npz"
SAFETENSORS_FILE = "params.safetensors"
CLT_FILE = re.compile(r"params_layer_(\d+)\.safetensors")
NEEDED = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")


def _canonical_names(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """w_enc → W_enc (Gemma Scope 2's spelling); everything as float32."""
  out = {}
  for key, value in raw.items():
    name = "W_" + key[2:] if key.lower().startswith("w_") else key
    out[name] = np.asarray(value, np.float32)
  return out


def read_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  """The arrays of a Gemma Scope params.npz (never unpickled)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      raw = {k: data[k] for k in data.files}
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    raise CheckpointError(
      f"{path} is not a readable npz of plain arrays ({e}); download it again"
    ) from e
  return _check(_canonical_names(raw), path)


def read_safetensors(path: pathlib.Path, clt: bool = False) -> dict[str, np.ndarray]:
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  try:
    raw = load_file(str(path))
  except (SafetensorError, OSError, ValueError) as e:
    raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from e
  return _check(_canonical_names(raw), path, clt)


def _check(t: dict[str, np.ndarray], path: pathlib.Path, clt=False) -> dict[str, np.ndarray]:
  missing = [k for k in NEEDED if k not in t]
  if missing:
    raise CheckpointError(f"{path} lacks {missing}; a Gemma Scope file holds {list(NEEDED)}")
  d, n = t["W_enc"].shape
  if t["W_dec"].shape[0] != n or t["b_enc"].shape != (n,) or t["threshold"].shape != (n,):
    raise CheckpointError(
      f"{path}: W_enc {t['W_enc'].shape}, W_dec {t['W_dec'].shape}, b_enc {t['b_enc'].shape} "
      f"and threshold {t['threshold'].shape} do not fit together"
    )
  if t["W_dec"].ndim != (3 if clt else 2):
    raise CheckpointError(
      f"{path}: W_dec {t['W_dec'].shape} is "
      + ("not a cross-layer transcoder's" if clt else "a cross-layer transcoder's; pass its folder")
    )
  return t


def to_sae(t: dict[str, np.ndarray], path: pathlib.Path) -> tuple[SAEConfig, dict[str, Any]]:
  """jaxsae JumpReLU (config, variables) equal to the file's encode and decode."""
  import jax.numpy as jnp

  d, n = t["W_enc"].shape
  if t["W_dec"].shape != (n, d) or t["b_dec"].shape != (d,):
    raise CheckpointError(
      f"{path}: W_dec {t['W_dec'].shape} maps to another width than W_enc {t['W_enc'].shape} "
      "reads: it is a transcoder; load it with jaxsae.sae.zoo.load_transcoder"
    )
  params = {
    "W_enc": t["W_enc"],
    "W_dec": t["W_dec"],
    "b_dec": t["b_dec"],
    # x W + b == (x − b_dec) W + (b + b_dec W): the centering jaxsae applies, undone.
    "b_enc": t["b_enc"] + t["b_dec"] @ t["W_enc"],
    "threshold": np.maximum(t["threshold"], 0.0),
  }
  config = SAEConfig("jumprelu", d, n)
  return config, {"params": {k: jnp.asarray(v) for k, v in params.items()}}


def to_transcoder(t: dict[str, np.ndarray], input_hook, output_hook, metadata: dict) -> Transcoder:
  return Transcoder(
    W_enc=t["W_enc"],
    b_enc=t["b_enc"],
    W_dec=t["W_dec"],
    b_dec=t["b_dec"],
    activation="jumprelu",
    threshold=t["threshold"],
    W_skip=t.get("affine_skip_connection"),
    input_hook=input_hook,
    output_hook=output_hook,
    metadata=metadata,
  )


def read(path: pathlib.Path, repo_id: str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
  """(description, tensors) of a Gemma Scope file or folder. The description holds
  source_format, hook, hook_out (transcoders), model, kind ("sae" or "transcoder")."""
  path = pathlib.Path(path)
  where = f"{repo_id or ''}/{path.as_posix()}"
  if path.name == NPZ_FILE or path.suffix == ".npz":
    t = read_npz(path)
    model, repo_kind = hooknames.gemma_scope_repo(where)
    hook, hook_out = hooknames.gemma_scope(where, repo_kind)
    if repo_kind == "res" and "embedding" in where:
      scale = np.sqrt(t["W_enc"].shape[0])
      t["W_enc"], t["W_dec"], t["b_dec"] = (
        t["W_enc"] / scale,
        t["W_dec"] * scale,
        t["b_dec"] * scale,
      )
    desc = {"source_format": "gemma_scope", "model": model, "hook": hook, "hook_out": hook_out}
    desc["kind"] = "transcoder" if repo_kind == "transcoders" else "sae"
  else:
    file = path if path.is_file() else path / SAFETENSORS_FILE
    t = read_safetensors(file)
    folder = file.parent
    cfg = _config(folder / "config.json")
    hook, hook_out, site = hooknames.gemma_scope_2(where if path.is_dir() else str(folder))
    hook = hooknames.from_hf_point(cfg.get("hf_hook_point_in")) or hook
    hook_out = hooknames.from_hf_point(cfg.get("hf_hook_point_out")) or hook_out
    transcoding = site in ("transcoder", "clt") or "affine_skip_connection" in t
    transcoding = transcoding or t["W_dec"].shape[1] != t["W_enc"].shape[0]
    desc = {"source_format": "gemma_scope_2", "model": cfg.get("model_name"), "hook": hook}
    desc.update(hook_out=hook_out, kind="transcoder" if transcoding else "sae")
  desc["path"] = str(path)
  return desc, t


def _config(file: pathlib.Path) -> dict:
  if not file.is_file():
    return {}
  try:
    doc = json.loads(file.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{file} is not valid JSON ({e})") from e
  return doc if isinstance(doc, dict) else {}


def clt_layers(folder: pathlib.Path) -> list[int]:
  """The layers of a Gemma Scope 2 CLT folder, from its params_layer_{i}.safetensors files."""
  found = (CLT_FILE.fullmatch(f.name) for f in folder.iterdir())
  return sorted(int(m.group(1)) for m in found if m)


def read_clt(folder: pathlib.Path) -> CrossLayerTranscoder:
  """A Gemma Scope 2 CLT folder: params_layer_{i}.safetensors for i = 0..L−1 (see the
  docstring)."""
  layers = clt_layers(folder)
  if layers != list(range(len(layers))):
    raise CheckpointError(f"{folder} has CLT layers {layers}; a CLT needs every layer 0..L−1")
  per_layer = [read_safetensors(folder / f"params_layer_{i}.safetensors", True) for i in layers]
  n_layers = len(per_layer)
  bad = [i for i, t in enumerate(per_layer) if t["W_dec"].shape[1] != n_layers]
  if bad:
    raise CheckpointError(f"{folder}: the decoders of layers {bad} are not [n, {n_layers}, d]")
  stack = lambda k: np.stack([t[k] for t in per_layer])  # noqa: E731
  skip = all("affine_skip_connection" in t for t in per_layer)
  cfg = _config(folder / "config.json")
  try:
    return CrossLayerTranscoder(
      W_enc=stack("W_enc"),
      b_enc=stack("b_enc"),
      W_dec=tuple(t["W_dec"][:, i:] for i, t in enumerate(per_layer)),
      b_dec=stack("b_dec"),
      activation="jumprelu",
      threshold=stack("threshold"),
      W_skip=stack("affine_skip_connection") if skip else None,
      input_hooks=tuple(f"blocks.{i}.mlp.in" for i in layers),
      output_hooks=tuple(f"blocks.{i}.mlp.out" for i in layers),
      metadata={"source_format": "gemma_scope_2_clt", "model": cfg.get("model_name")},
    )
  except ValueError as e:
    raise CheckpointError(f"{folder} is not a readable Gemma Scope 2 CLT ({e})") from e


def _jumprelu_threshold(activation: str, threshold, shape) -> np.ndarray:
  if activation == "jumprelu":
    return np.asarray(threshold, np.float32)
  if activation == "relu":
    return np.zeros(shape, np.float32)  # ReLU(pre) = pre · 1[pre > 0].
  raise CheckpointError(
    f"Gemma Scope 2 files hold JumpReLU dictionaries; this one's activation is {activation!r}: "
    "write it with jaxsae.sae.zoo.circuit_tracer (TopK) or jaxsae.sae.sparsify_format"
  )


def _params(W_enc, W_dec, b_enc, b_dec, threshold, W_skip) -> dict[str, np.ndarray]:
  """One params(_layer_i).safetensors: Gemma Scope 2's names, float32."""
  f32 = lambda a: np.ascontiguousarray(a, np.float32)  # noqa: E731
  t = {"w_enc": f32(W_enc), "w_dec": f32(W_dec), "b_enc": f32(b_enc), "b_dec": f32(b_dec)}
  t["threshold"] = f32(threshold)
  if W_skip is not None:
    t["affine_skip_connection"] = f32(W_skip)
  return t


def _write_config(folder: pathlib.Path, model_name, hook_in, hook_out, skip: bool) -> None:
  cfg = {"architecture": "jump_relu", "model_name": model_name}
  cfg["hf_hook_point_in"] = hooknames.to_hf_point(hook_in)
  cfg["hf_hook_point_out"] = hooknames.to_hf_point(hook_out)
  cfg["affine_connection"] = skip
  (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def write_transcoder(
  folder: str | pathlib.Path, tc: Transcoder, model_name: str | None = None
) -> pathlib.Path:
  """A Gemma Scope 2 transcoder folder (like transcoder/layer_L_width_16k_l0_small):
  params.safetensors with w_enc [d_in, n], w_dec [n, d_out], b_enc, b_dec, threshold and, with a
  skip connection, affine_skip_connection [d_in, d_out]; config.json with architecture,
  model_name, hf_hook_point_in / _out and affine_connection."""
  from safetensors.numpy import save_file

  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  threshold = _jumprelu_threshold(tc.activation, tc.threshold, tc.b_enc.shape)
  t = _params(tc.W_enc, tc.W_dec, tc.b_enc, tc.b_dec, threshold, tc.W_skip)
  save_file(t, str(folder / SAFETENSORS_FILE))
  model = model_name or tc.metadata.get("model")
  _write_config(folder, model, tc.input_hook, tc.output_hook, tc.W_skip is not None)
  return folder


def write_clt(
  folder: str | pathlib.Path, clt: CrossLayerTranscoder, model_name: str | None = None
) -> pathlib.Path:
  """A Gemma Scope 2 CLT folder: params_layer_{i}.safetensors per layer, w_dec [n, L, d] with
  zeros for the layers before i (which the readers drop), plus config.json from layer 0's hooks."""
  from safetensors.numpy import save_file

  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  L, d, n = clt.W_enc.shape
  thresholds = _jumprelu_threshold(clt.activation, clt.threshold, (L, n))
  for i in range(L):
    w_dec = np.zeros((n, L, clt.b_dec.shape[-1]), np.float32)
    w_dec[:, i:] = clt.W_dec[i]
    skip = None if clt.W_skip is None else clt.W_skip[i]
    t = _params(clt.W_enc[i], w_dec, clt.b_enc[i], clt.b_dec[i], thresholds[i], skip)
    save_file(t, str(folder / f"params_layer_{i}.safetensors"))
  hooks = (clt.input_hooks or (None,))[0], (clt.output_hooks or (None,))[0]
  _write_config(folder, model_name or clt.metadata.get("model"), *hooks, clt.W_skip is not None)
  return folder
