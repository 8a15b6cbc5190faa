"""EleutherAI sparsify's format: a folder per hookpoint holding `cfg.json` (its
`SparseCoderConfig` plus `d_in`) and `sae.safetensors` (`encoder.weight` [n, d],
`encoder.bias` [n], `W_dec` [n, d], `b_dec` [d], and `W_skip` [d, d] when `skip_connection`).

sparsify's SparseCoder (`encode`/`decode`/`forward`), x the input and ŷ its output:
    z = TopK_k(ReLU(x' encoder.weightᵀ + encoder.bias)),  x' = x − b_dec, or x when `transcode`
    ŷ = z W_dec + b_dec (+ x W_skipᵀ when `skip_connection`)
A plain TopK SAE (neither flag) is jaxsae's topk (W_enc = encoder.weightᵀ): `load` and `save`.
Transcoders (`transcode`) and skip connections map x to another vector, so they are read into
`jaxsae.sae.zoo.transcoders.Transcoder` records (`read_transcoder`, activation "relu_topk"; the
centering of a skip SAE is folded into b_enc) and written back by `save_transcoder`. sparsify's
transcoders predict an output as wide as their input (d_out = d_in). groupmax is refused.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxsae.errors import CheckpointError
from jaxsae.sae import weights_folder
from jaxsae.sae.config import SAEConfig
from jaxsae.sae.normalization import fold_scale

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
HINT = " (pass the hookpoint's folder, e.g. run/layers.6)"


def _cfg(n: int, d_in: int, k: int, transcode: bool, skip: bool, multi_topk=False) -> dict:
  """cfg.json as sparsify's save_to_disk writes it: SparseCoderConfig.to_dict() plus d_in."""
  return {
    "activation": "topk",
    "expansion_factor": max(n // d_in, 1),
    "normalize_decoder": not transcode,
    "num_latents": n,
    "k": int(k),
    "multi_topk": multi_topk,
    "skip_connection": skip,
    "transcode": transcode,
    "d_in": d_in,
  }


def save(
  path: str | pathlib.Path, config: SAEConfig, variables: dict[str, Any], scale: float = 1.0
) -> pathlib.Path:
  """Write a TopK SAE (trained on scale·x) as a sparsify folder that acts on raw x."""
  if config.architecture != "topk":
    raise CheckpointError(
      f"sparsify stores TopK SAEs; this one is {config.architecture}: export it with "
      "jaxsae.sae.saelens.save instead"
    )
  if config.transcode or config.skip:
    raise CheckpointError(
      "this is a transcoder or has a skip connection: write its Transcoder record "
      "(jaxsae.sae.transcoder_format.to_record) with save_transcoder instead"
    )
  p = {k: np.asarray(v, np.float32) for k, v in fold_scale(variables["params"], scale).items()}
  tensors = {
    "encoder.weight": p["W_enc"].T,
    "encoder.bias": p["b_enc"],
    "W_dec": p["W_dec"],
    "b_dec": p["b_dec"],
  }
  cfg = _cfg(config.n_latents, config.d_in, config.k, False, False, config.multi_topk)
  return weights_folder.write(path, cfg, tensors, CONFIG_FILE, WEIGHTS_FILE)


def is_transcoder(path: str | pathlib.Path) -> bool:
  """Whether a sparsify folder's cfg.json has `transcode` or `skip_connection` set."""
  try:
    cfg = json.loads((pathlib.Path(path) / CONFIG_FILE).read_text())
  except (OSError, ValueError):
    return False
  return isinstance(cfg, dict) and bool(cfg.get("transcode") or cfg.get("skip_connection"))


def _read(path: pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
  """(cfg, tensors) of a TopK folder, shapes checked."""
  cfg, t = weights_folder.read(path, CONFIG_FILE, WEIGHTS_FILE, "sparsify", HINT)
  if cfg.get("activation", "topk") != "topk":
    raise CheckpointError(
      f"{path}: sparsify activation={cfg['activation']!r} is not read; jaxsae reads TopK "
      "(activation='topk') folders"
    )
  need = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}
  need |= {"W_skip"} if cfg.get("skip_connection") else set()
  missing = sorted(need - set(t))
  if missing:
    raise CheckpointError(f"{path}/{WEIGHTS_FILE} lacks tensor(s) {missing}")
  n, d = t["encoder.weight"].shape
  if t["W_dec"].shape != (n, d) or t["b_dec"].shape != (d,) or t["encoder.bias"].shape != (n,):
    raise CheckpointError(
      f"{path}: encoder.weight {t['encoder.weight'].shape}, W_dec {t['W_dec'].shape} and "
      f"b_dec {t['b_dec'].shape} do not fit together"
    )
  if "W_skip" in t and t["W_skip"].shape != (d, d):
    raise CheckpointError(f"{path}: W_skip {t['W_skip'].shape} should be ({d}, {d})")
  return cfg, t


def load(path: str | pathlib.Path) -> tuple[SAEConfig, dict[str, Any]]:
  """(config, variables acting on raw activations) of one sparsify hookpoint folder."""
  path = pathlib.Path(path)
  if is_transcoder(path):
    raise CheckpointError(
      f"{path} is a sparsify transcoder or skip SAE (transcode / skip_connection set), which "
      "maps one vector to another; read it with jaxsae.sae.zoo.load_transcoder"
    )
  cfg, t = _read(path)
  n, d = t["encoder.weight"].shape
  config = SAEConfig("topk", d, n, k=int(cfg["k"]), k_aux=0)
  params = {
    "W_enc": jnp.asarray(t["encoder.weight"].T),
    "b_enc": jnp.asarray(t["encoder.bias"]),
    "W_dec": jnp.asarray(t["W_dec"]),
    "b_dec": jnp.asarray(t["b_dec"]),
  }
  return config, {"params": params}


def read_transcoder(path: str | pathlib.Path):
  """A sparsify folder as a `Transcoder` record (activation relu_topk), by the module docstring's
  formula; a skip SAE's centering x − b_dec is folded into b_enc."""
  from jaxsae.sae.zoo import hooknames
  from jaxsae.sae.zoo.transcoders import Transcoder

  path = pathlib.Path(path)
  cfg, t = _read(path)
  W_enc, b_enc = t["encoder.weight"].T, t["encoder.bias"]
  if cfg.get("transcode"):
    hook_in, hook_out = hooknames.from_sparsify_transcoder(path.name)
  else:  # (x − b_dec) W + b = x W + (b − b_dec W)
    b_enc = b_enc - t["b_dec"] @ W_enc
    hook_in = hook_out = hooknames.from_sparsify_hookpoint(path.name)
  meta = {"source_format": "sparsify", "hookpoint": path.name, "path": str(path)}
  return Transcoder(
    W_enc=np.ascontiguousarray(W_enc),
    b_enc=b_enc,
    W_dec=t["W_dec"],
    b_dec=t["b_dec"],
    activation="relu_topk",
    k=int(cfg["k"]),
    W_skip=t["W_skip"].T if "W_skip" in t else None,
    input_hook=hook_in,
    output_hook=hook_out,
    metadata=meta,
  )


def save_transcoder(path: str | pathlib.Path, tc) -> pathlib.Path:
  """Write a `Transcoder` as a sparsify folder (`transcode` true; `skip_connection` when it has
  W_skip) that sparsify's SparseCoder.load_from_disk reads; only sparsify's own activation
  (relu_topk) and d_out = d_in can be written."""
  if tc.activation != "relu_topk":
    raise CheckpointError(
      f"sparsify's transcoders compute TopK_k(ReLU(pre)); this one's activation is "
      f"{tc.activation!r}, which sparsify cannot express: write it with "
      "jaxsae.sae.zoo.circuit_tracer.write_set instead"
    )
  if tc.d_out != tc.d_in:
    raise CheckpointError(
      f"sparsify's transcoders predict a vector as wide as their input; this one maps "
      f"d_in={tc.d_in} to d_out={tc.d_out}: write it with jaxsae.sae.zoo.circuit_tracer.write_set"
    )
  tensors = {
    "encoder.weight": tc.W_enc.T,
    "encoder.bias": tc.b_enc,
    "W_dec": tc.W_dec,
    "b_dec": tc.b_dec,
  }
  if tc.W_skip is not None:
    tensors["W_skip"] = tc.W_skip.T
  tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
  cfg = _cfg(tc.n_latents, tc.d_in, tc.k, True, tc.W_skip is not None)
  return weights_folder.write(path, cfg, tensors, CONFIG_FILE, WEIGHTS_FILE)
