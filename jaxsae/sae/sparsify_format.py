"""EleutherAI sparsify's format: a folder per hookpoint holding `cfg.json` (its
`SparseCoderConfig` plus `d_in`) and `sae.safetensors` (`encoder.weight` [n, d],
`encoder.bias` [n], `W_dec` [n, d], `b_dec` [d], and `W_skip` [d, d] for skip transcoders).

sparsify's TopK SAE is jaxsae's topk (`SparseCoder.encode`/`decode`):
    z = TopK_k(ReLU((x − b_dec) encoder.weightᵀ + encoder.bias)),   x̂ = z W_dec + b_dec,
so W_enc = encoder.weightᵀ. Transcoders (`transcode`: no b_dec subtraction), skip connections
and the groupmax activation are refused until jaxsae trains them.
"""

from __future__ import annotations

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


def save(
  path: str | pathlib.Path, config: SAEConfig, variables: dict[str, Any], scale: float = 1.0
) -> pathlib.Path:
  """Write a TopK SAE (trained on scale·x) as a sparsify folder that acts on raw x."""
  if config.architecture != "topk":
    raise CheckpointError(
      f"sparsify stores TopK SAEs; this one is {config.architecture}: export it with "
      "jaxsae.sae.saelens.save instead"
    )
  p = {k: np.asarray(v, np.float32) for k, v in fold_scale(variables["params"], scale).items()}
  tensors = {
    "encoder.weight": p["W_enc"].T,
    "encoder.bias": p["b_enc"],
    "W_dec": p["W_dec"],
    "b_dec": p["b_dec"],
  }
  cfg = {
    "activation": "topk",
    "expansion_factor": max(config.n_latents // config.d_in, 1),
    "normalize_decoder": True,
    "num_latents": config.n_latents,
    "k": config.k,
    "multi_topk": config.multi_topk,
    "skip_connection": False,
    "transcode": False,
    "d_in": config.d_in,
  }
  return weights_folder.write(path, cfg, tensors, CONFIG_FILE, WEIGHTS_FILE)


def load(path: str | pathlib.Path) -> tuple[SAEConfig, dict[str, Any]]:
  """(config, variables acting on raw activations) of one sparsify hookpoint folder."""
  path = pathlib.Path(path)
  hint = " (pass the hookpoint's folder, e.g. run/layers.6)"
  cfg, t = weights_folder.read(path, CONFIG_FILE, WEIGHTS_FILE, "sparsify", hint)
  for key, supported in (("activation", "topk"), ("transcode", False), ("skip_connection", False)):
    if cfg.get(key, supported) != supported:
      raise CheckpointError(
        f"{path}: sparsify {key}={cfg[key]!r} is not read yet; jaxsae reads TopK SAEs "
        f"({key}={supported!r})"
      )
  missing = sorted({"encoder.weight", "encoder.bias", "W_dec", "b_dec"} - set(t))
  if missing:
    raise CheckpointError(f"{path}/{WEIGHTS_FILE} lacks tensor(s) {missing}")
  n, d = t["encoder.weight"].shape
  if t["W_dec"].shape != (n, d) or t["b_dec"].shape != (d,) or t["encoder.bias"].shape != (n,):
    raise CheckpointError(
      f"{path}: encoder.weight {t['encoder.weight'].shape}, W_dec {t['W_dec'].shape} and "
      f"b_dec {t['b_dec'].shape} do not fit together"
    )
  config = SAEConfig("topk", d, n, k=int(cfg["k"]), k_aux=0)
  params = {
    "W_enc": jnp.asarray(t["encoder.weight"].T),
    "b_enc": jnp.asarray(t["encoder.bias"]),
    "W_dec": jnp.asarray(t["W_dec"]),
    "b_dec": jnp.asarray(t["b_dec"]),
  }
  return config, {"params": params}
