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
the centering folded into the encoder biases.

`normalize_activations`, as sae-lens 6.54 treats it (`SAE._setup_activation_normalization`,
`fold_activation_norm_scaling_factor`, `from_pretrained`):
  - "expected_average_only_in" (or the old `true`): inference applies nothing; sae-lens's
    from_pretrained folds the release's `norm_scaling_factor` s (W_enc·s, W_dec/s, b_dec/s) and
    its trainer folds its estimate at the end of training. jaxsae folds s the same way when it is
    known: the release table's (`norm_scaling_factor`), else a sae-lens checkpoint's
    `activation_scaler.json` beside cfg.json (sae-lens's load_from_disk ignores that file, so
    there jaxsae equals load_from_disk followed by sae-lens's fold). Without s the weights are
    read as they are, as load_from_disk does, with a warning: they expect inputs scaled by s.
  - "covariance_whitening": inference applies nothing either (sae-lens folds it at the end of
    training); read as load_from_disk does, with a warning.
  - "constant_norm_rescale", "layer_norm": per-token rescaling (x·√d/‖x‖, or (x − μ)/σ) before
    encoding, undone after decoding; it depends on each token, so no weights express it and
    `load` refuses such files.
"""

from __future__ import annotations

import json
import pathlib
import warnings
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxsae.errors import CheckpointError
from jaxsae.sae import weights_folder
from jaxsae.sae.config import SAEConfig
from jaxsae.sae.normalization import fold_scale

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SCALER_FILE = "activation_scaler.json"  # sae-lens's trainer writes it beside a checkpoint.
NORMALIZATIONS = (
  "none",
  "expected_average_only_in",
  "constant_norm_rescale",
  "layer_norm",
  "covariance_whitening",
)


def _np(x) -> np.ndarray:
  return np.asarray(x, np.float32)


def to_saelens(config: SAEConfig, variables: dict[str, Any], scale: float) -> tuple[dict, dict]:
  """(cfg, tensors) in the SAELens layout for an SAE trained on scale·x."""
  if config.transcode or config.skip:
    raise CheckpointError(
      "this is a transcoder or has a skip connection, which SAELens's SAE format does not "
      "hold; write it with jaxsae.sae.transcoder_format (circuit-tracer) or export.save"
    )
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


def normalization(cfg: dict) -> str:
  """cfg's normalize_activations, old booleans mapped as sae-lens's handle_config_defaulting."""
  norm = cfg.get("normalize_activations", "none")
  if isinstance(norm, bool):
    return "expected_average_only_in" if norm else "none"
  return "none" if norm is None else norm


def _scaler_factor(path: pathlib.Path) -> float | None:
  try:
    factor = json.loads((path / SCALER_FILE).read_text()).get("scaling_factor")
  except (OSError, ValueError, AttributeError):
    return None
  return float(factor) if isinstance(factor, (int, float)) and factor > 0 else None


def norm_scaling_factor(
  path: pathlib.Path, cfg: dict, release_factor: float | None
) -> float | None:
  """The input scale s to fold (None: none), or a CheckpointError for a per-token
  normalization; see the module docstring."""
  norm = normalization(cfg)
  if norm == "none":
    return None
  if norm not in NORMALIZATIONS:
    raise CheckpointError(f"{path}: normalize_activations={norm!r} is not one of {NORMALIZATIONS}")
  if norm in ("constant_norm_rescale", "layer_norm"):
    raise CheckpointError(
      f"{path} uses normalize_activations={norm!r}: sae-lens rescales every token before "
      "encoding and undoes it after decoding, which depends on the token, so no weights can "
      "hold it and jaxsae's SAEs (acting on raw activations) cannot reproduce it. Use sae-lens "
      "for this SAE, or apply that normalization to the activations yourself and save the SAE "
      "with normalize_activations='none'"
    )
  factor = (release_factor or _scaler_factor(path)) if norm == "expected_average_only_in" else None
  if factor is None:
    warnings.warn(
      f"{path} says normalize_activations={norm!r} but records no factor (no release "
      f"norm_scaling_factor, no {SCALER_FILE}); read as sae-lens's load_from_disk reads it, "
      "the SAE expects activations normalized as in its training",
      stacklevel=3,
    )
  return factor


def load(
  path: str | pathlib.Path, release_factor: float | None = None
) -> tuple[SAEConfig, dict[str, Any]]:
  """(config, variables acting on raw activations) of a SAELens folder; `release_factor` is the
  sae-lens release table's norm_scaling_factor for an "expected_average_only_in" SAE."""
  path = pathlib.Path(path)
  cfg, t = weights_folder.read(path, CONFIG_FILE, WEIGHTS_FILE, "SAELens")
  scale = norm_scaling_factor(path, cfg, release_factor)
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
  if scale is not None:  # sae-lens's fold_activation_norm_scaling_factor.
    t["W_enc"], t["W_dec"], t["b_dec"] = t["W_enc"] * scale, t["W_dec"] / scale, t["b_dec"] / scale
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
