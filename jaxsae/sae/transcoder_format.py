"""jaxsae's dictionaries as the zoo's `Transcoder` records and back; through the records,
circuit-tracer's per-layer files (`zoo.circuit_tracer.write_layer`) and sparsify's folders
(`sparsify_format.save_transcoder`).

A record acts on raw activations, so both scales are folded (`normalization.fold_scale`):

    pre = x (c W_enc) + b_enc' ;  ŷ = z (W_dec/c_y) + b_dec/c_y + x (c/c_y W_skip)

with b_enc' = b_enc for a transcoder, and b_enc − (b_dec/c)(c W_enc) for an SAE (its centering
folded into the encoder bias, as sparsify's reader does). Activations map exactly:

    relu       → "relu"        ReLU(pre)
    jumprelu   → "jumprelu"    pre · 1[pre > θ]
    batchtopk  → "jumprelu"    its inference rule ReLU(pre) · 1[pre > θ], θ_i = max(θ, 0)
    topk       → "relu_topk"   ReLU(TopK_k(pre)) = TopK_k(ReLU(pre)) (sparsify's)

circuit-tracer's "topk" keeps the k largest pre without a ReLU; `to_record(...,
relu_topk=False)` writes that, which equals ours wherever a token's k-th pre-activation is
positive (and keeps negative values where it is not). Gated and ProLU have no record form.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsae.errors import CheckpointError
from jaxsae.sae.config import SAEConfig
from jaxsae.sae.normalization import fold_scale
from jaxsae.sae.zoo.transcoders import Transcoder

ACTIVATIONS = {"relu": "relu", "jumprelu": "jumprelu", "batchtopk": "jumprelu", "topk": "relu_topk"}


def to_record(
  config: SAEConfig,
  variables: dict[str, Any],
  scale: float = 1.0,
  target_scale: float | None = None,
  *,
  input_hook: str | None = None,
  output_hook: str | None = None,
  relu_topk: bool = True,
  metadata: dict | None = None,
) -> Transcoder:
  """The record of a dictionary trained on scale·x (and target_scale·y), acting on raw x."""
  arch = config.architecture
  if config.layers > 1:
    raise CheckpointError(
      f"this is a cross-layer transcoder over {config.layers} layers, not one layer's "
      "transcoder: its record is jaxsae.sae.cross_layer.record"
    )
  if arch not in ACTIVATIONS:
    raise CheckpointError(
      f"{arch} has no transcoder-record form; records hold {sorted(ACTIVATIONS)} dictionaries"
    )
  p = {
    k: np.asarray(v, np.float64)
    for k, v in fold_scale(variables["params"], scale, target_scale).items()
  }
  b_enc = p["b_enc"]
  if not config.transcode:  # pre = (x − b_dec) W_enc + b_enc = x W_enc + (b_enc − b_dec W_enc).
    b_enc = b_enc - p["b_dec"] @ p["W_enc"]
  threshold, k = None, None
  activation = ACTIVATIONS[arch]
  if arch == "jumprelu":
    threshold = p["threshold"]
  elif arch == "batchtopk":
    theta = max(float(np.asarray(variables["buffers"]["threshold"])), 0.0)
    threshold = np.full(config.n_latents, theta)
  elif arch == "topk":
    k = config.k
    activation = "relu_topk" if relu_topk else "topk"
  f32 = lambda a: None if a is None else np.asarray(a, np.float32)  # noqa: E731
  return Transcoder(
    W_enc=f32(p["W_enc"]),
    b_enc=f32(b_enc),
    W_dec=f32(p["W_dec"]),
    b_dec=f32(p["b_dec"]),
    activation=activation,
    threshold=f32(threshold),
    k=k,
    W_skip=f32(p.get("W_skip")),
    input_hook=input_hook,
    output_hook=output_hook,
    metadata={"source_format": "jaxsae", "architecture": arch, **(metadata or {})},
  )


def from_record(tc: Transcoder) -> tuple[SAEConfig, dict[str, Any]]:
  """(config, variables) of a jaxsae transcoder computing `tc`'s function on raw activations."""
  kinds = {"relu": "relu", "jumprelu": "jumprelu", "relu_topk": "topk"}
  if tc.activation not in kinds:
    raise CheckpointError(
      f"a {tc.activation!r} transcoder (TopK without a ReLU, circuit-tracer's) has no jaxsae "
      "architecture; jaxsae's topk is ReLU(TopK_k(pre))"
    )
  arch = kinds[tc.activation]
  config = SAEConfig(
    architecture=arch,
    d_in=tc.d_in,
    n_latents=tc.n_latents,
    k=tc.k or 1,
    d_out=tc.d_out,
    transcode=True,
    skip=tc.W_skip is not None,
  )
  params = {"W_enc": tc.W_enc, "b_enc": tc.b_enc, "W_dec": tc.W_dec, "b_dec": tc.b_dec}
  if arch == "jumprelu":
    params["threshold"] = tc.threshold
  if tc.W_skip is not None:
    params["W_skip"] = tc.W_skip
  return config, {"params": {k: np.asarray(v, np.float32) for k, v in params.items()}}
