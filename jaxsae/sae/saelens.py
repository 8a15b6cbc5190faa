"""The SAELens format: `cfg.json` + `sae_weights.safetensors`, read by sae-lens and, through
it, SAEBench, SAE-Vis and Neuronpedia.

Exported from the folded parameters (they act on raw activations). Mapping:

| jaxsae | SAELens | how |
|---|---|---|
| relu | standard | same formula |
| topk (Multi-TopK, Matryoshka are loss options) | topk | same formula, `k` |
| gated | gated | same formula (b_gate, b_mag, r_mag) |
| jumprelu | jumprelu | same formula, per-latent `threshold` |
| batchtopk | jumprelu | its inference threshold θ for every latent |
| prolu_relu, prolu_ste | jumprelu | z = m·1[m > max(0, −b)]: b_enc = 0, threshold = ReLU(−b) |

Import maps standard/topk/gated/jumprelu back (negative JumpReLU thresholds clamped at 0, which
is what sae-lens's ReLU before the mask does); a file with `apply_b_dec_to_input = false` has
the centering folded into the encoder biases, and any activation normalization is refused.
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
WEIGHTS_FILE = "sae_weights.safetensors"


def _np(x) -> np.ndarray:
  return np.asarray(x, np.float32)


def to_saelens(config: SAEConfig, variables: dict[str, Any], scale: float) -> tuple[dict, dict]:
  """(cfg, tensors) in the SAELens layout for an SAE trained on scale·x."""
  p = {k: _np(v) for k, v in fold_scale(variables["params"], scale).items()}
  arch = config.architecture
  tensors = {"W_enc": p["W_enc"], "W_dec": p["W_dec"], "b_dec": p["b_dec"]}
  extra: dict[str, Any] = {}
  if arch == "relu":
    kind = "standard"
    tensors["b_enc"] = p["b_enc"]
  elif arch == "topk":
    kind, extra = "topk", {"k": config.k}
    tensors["b_enc"] = p["b_enc"]
  elif arch == "gated":
    kind = "gated"
    tensors.update(b_gate=p["b_gate"], b_mag=p["b_mag"], r_mag=p["r_mag"])
  elif arch == "jumprelu":
    kind = "jumprelu"
    tensors.update(b_enc=p["b_enc"], threshold=p["threshold"])
  elif arch == "batchtopk":
    kind = "jumprelu"
    theta = float(np.asarray(variables["buffers"]["threshold"]))
    threshold = np.full(config.n_latents, max(theta, 0.0), np.float32)
    tensors.update(b_enc=p["b_enc"], threshold=threshold)
  elif arch in ("prolu_relu", "prolu_ste"):
    kind = "jumprelu"
    tensors.update(b_enc=np.zeros_like(p["b_enc"]), threshold=np.maximum(-p["b_enc"], 0.0))
  else:
    raise CheckpointError(f"no SAELens mapping for architecture {arch!r}")
  cfg = {
    "architecture": kind,
    "d_in": config.d_in,
    "d_sae": config.n_latents,
    "dtype": "float32",
    "device": "cpu",
    "apply_b_dec_to_input": True,
    "normalize_activations": "none",
    "reshape_activations": "none",
    **extra,
    "metadata": {"jaxsae_architecture": arch},
  }
  return cfg, tensors


def save(
  path: str | pathlib.Path,
  config: SAEConfig,
  variables: dict[str, Any],
  scale: float,
  metadata: dict | None = None,
) -> pathlib.Path:
  """Write the SAELens folder. `metadata` (hook_name, model_name, …) goes into cfg["metadata"]."""
  cfg, tensors = to_saelens(config, variables, scale)
  cfg["metadata"].update(metadata or {})
  return weights_folder.write(path, cfg, tensors, CONFIG_FILE, WEIGHTS_FILE)


def load(path: str | pathlib.Path) -> tuple[SAEConfig, dict[str, Any]]:
  """(config, variables acting on raw activations) of a SAELens folder."""
  path = pathlib.Path(path)
  cfg, t = weights_folder.read(path, CONFIG_FILE, WEIGHTS_FILE, "SAELens")
  norm = cfg.get("normalize_activations", "none")
  if norm not in ("none", None):
    raise CheckpointError(
      f"{path} uses normalize_activations={norm!r}, which jaxsae does not fold; export it with "
      "normalization folded into the weights"
    )
  kind = cfg.get("architecture", "standard")
  names = {"standard": "relu", "topk": "topk", "gated": "gated", "jumprelu": "jumprelu"}
  if kind not in names:
    raise CheckpointError(f"{path}: SAELens architecture {kind!r} is not one of {sorted(names)}")
  need = {"W_enc", "W_dec", "b_dec"} | (
    {"b_gate", "b_mag", "r_mag"} if kind == "gated" else {"b_enc"}
  )
  if kind == "jumprelu":
    need.add("threshold")
  missing = sorted(need - set(t))
  if missing:
    raise CheckpointError(f"{path}/{WEIGHTS_FILE} lacks tensor(s) {missing} for {kind}")
  d, n = t["W_enc"].shape
  if t["W_dec"].shape != (n, d) or t["b_dec"].shape != (d,):
    raise CheckpointError(
      f"{path}: W_enc {t['W_enc'].shape}, W_dec {t['W_dec'].shape} and b_dec "
      f"{t['b_dec'].shape} do not fit together"
    )
  if not cfg.get("apply_b_dec_to_input", True):
    # pre = x W + b  ==  (x − b_dec) W + (b + b_dec W): fold the missing centering into biases.
    shift = t["b_dec"] @ t["W_enc"]
    if kind == "gated":
      t["b_gate"] = t["b_gate"] + shift
      t["b_mag"] = t["b_mag"] + t["b_dec"] @ (t["W_enc"] * np.exp(t["r_mag"]))
    else:
      t["b_enc"] = t["b_enc"] + shift
  if kind == "jumprelu":
    # sae-lens computes ReLU(pre)·1[pre > θ]; for θ < 0 that is pre·1[pre > 0], so jaxsae's
    # pre·1[pre > θ] equals it with θ clamped at 0.
    t["threshold"] = np.maximum(t["threshold"], 0.0)
  fields: dict[str, Any] = {"architecture": names[kind], "d_in": d, "n_latents": n}
  if kind == "topk":
    fields.update(k=int(cfg["k"]), k_aux=0)
  if kind == "standard":
    fields["decoder_norm"] = "penalty"
  config = SAEConfig(**fields)
  keep = set(need) | ({"b_enc"} if kind != "gated" else set())
  return config, {"params": {k: jnp.asarray(t[k]) for k in keep if k in t}}
