"""sae-lens's transcoders saved as SAELens folders (cfg.json + sae_weights.safetensors with
architecture transcoder, skip_transcoder, jumprelu_transcoder or jumprelu_skip_transcoder),
read into `Transcoder` records.

sae-lens: pre = x W_enc + b_enc (never centered); z = ReLU(pre), times 1[pre > θ] for the
JumpReLU ones; ŷ = z W_dec + b_dec (+ x W_skipᵀ, W_skip [d_out, d_in]). The record's JumpReLU has
no ReLU, so θ is clamped at 0: pre·1[pre > max(θ, 0)] = ReLU(pre)·1[pre > θ] for every θ.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jaxsae.errors import CheckpointError
from jaxsae.sae import weights_folder
from jaxsae.sae.zoo import hooknames
from jaxsae.sae.zoo.transcoders import Transcoder

ARCHITECTURES = {
  "transcoder": "relu",
  "skip_transcoder": "relu",
  "jumprelu_transcoder": "jumprelu",
  "jumprelu_skip_transcoder": "jumprelu",
}


def architecture(folder: pathlib.Path) -> str | None:
  """The cfg.json's architecture if it is one of sae-lens's transcoders, else None."""
  import json

  try:
    cfg = json.loads((folder / "cfg.json").read_text())
  except (OSError, ValueError):
    return None
  kind = cfg.get("architecture") if isinstance(cfg, dict) else None
  return kind if kind in ARCHITECTURES else None


def read(folder: pathlib.Path) -> Transcoder:
  cfg, t = weights_folder.read(folder, "cfg.json", "sae_weights.safetensors", "SAELens")
  kind = cfg["architecture"]
  if cfg.get("normalize_activations", "none") not in ("none", None):
    raise CheckpointError(
      f"{folder} uses normalize_activations={cfg['normalize_activations']!r}, which jaxsae does "
      "not fold; save the transcoder with normalization folded into its weights"
    )
  activation = ARCHITECTURES[kind]
  need = {"W_enc", "W_dec", "b_enc", "b_dec"} | (
    {"threshold"} if activation == "jumprelu" else set()
  )
  need |= {"W_skip"} if "skip" in kind else set()
  missing = sorted(need - set(t))
  if missing:
    raise CheckpointError(f"{folder}/sae_weights.safetensors lacks {missing} for {kind}")
  meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
  get = lambda key: meta.get(key, cfg.get(key))  # noqa: E731  (old configs: top level)
  try:
    return Transcoder(
      W_enc=t["W_enc"],
      b_enc=t["b_enc"],
      W_dec=t["W_dec"],
      b_dec=t["b_dec"],
      activation=activation,
      threshold=np.maximum(t["threshold"], 0.0) if activation == "jumprelu" else None,
      W_skip=t["W_skip"].T if "W_skip" in t else None,
      input_hook=hooknames.valid(get("hook_name")),
      output_hook=hooknames.valid(get("hook_name_out")),
      metadata={"source_format": "saelens", "model": get("model_name"), "path": str(folder)},
    )
  except ValueError as e:
    raise CheckpointError(f"{folder}: {e}") from e
