"""Transcoders read from published files: typed records of numpy weights and pure encode/decode.

jaxsae's SAE modules map one hook to itself; a transcoder reads one hook and writes another, so
until the SAE modules carry a d_out these are records, not modules. Orientation is jaxsae's
(x · W): W_enc [d_in, n], W_dec [n, d_out], W_skip [d_in, d_out].

Per-layer transcoder (Gemma Scope 2 `transcoder*` folders, circuit-tracer `layer_{i}`):

    pre = x W_enc + b_enc          (no b_dec subtraction: b_dec lives on the output side)
    z   = pre · 1[pre > θ]  (jumprelu)  |  ReLU(pre)  (relu)  |  pre · 1[pre ∈ top-k]  (topk)
          | TopK_k(ReLU(pre))  (relu_topk: sparsify's, which drops negative values among the k)
    ŷ   = z W_dec + b_dec (+ x W_skip)

The jumprelu and topk forms are circuit-tracer's (no ReLU); sae-lens applies a ReLU before the
JumpReLU mask, which is the same function for θ ≥ 0 (every published file).

Cross-layer transcoder (circuit-tracer CLT over L layers): features of layer i read x_i and write
to every layer j ≥ i, W_dec[i] [n, L − i, d]:

    z_i = act(x_i W_enc[i] + b_enc[i]) ;
    ŷ_j = Σ_{i ≤ j} z_i W_dec[i][:, j − i] + b_dec[j] (+ x_j W_skip[j], Gemma Scope 2's affine CLTs)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

ACTIVATIONS = ("jumprelu", "relu", "topk", "relu_topk")
TOPK = ("topk", "relu_topk")


def activate(pre: np.ndarray, activation: str, threshold=None, k: int | None = None) -> np.ndarray:
  """z from pre-activations (last axis = latents), by the formulas of the module docstring."""
  if activation == "jumprelu":
    return pre * (pre > threshold)
  if activation == "relu":
    return np.maximum(pre, 0.0)
  if activation == "topk":
    # Ties at the k-th value keep every tied latent; random weights have none.
    kth = -np.partition(-pre, k - 1, axis=-1)[..., k - 1 : k]
    return pre * (pre >= kth)
  if activation == "relu_topk":
    return activate(np.maximum(pre, 0.0), "topk", k=k)
  raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")


@dataclasses.dataclass(frozen=True, eq=False)
class Transcoder:
  """One layer's transcoder: input_hook → output_hook (jaxsae hook names, None if unknown)."""

  W_enc: np.ndarray
  b_enc: np.ndarray
  W_dec: np.ndarray
  b_dec: np.ndarray
  activation: str = "jumprelu"
  threshold: np.ndarray | None = None
  k: int | None = None
  W_skip: np.ndarray | None = None
  input_hook: str | None = None
  output_hook: str | None = None
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    d_in, n = self.W_enc.shape
    d_out = self.W_dec.shape[1]
    problems = []
    if self.W_dec.shape != (n, d_out) or self.b_enc.shape != (n,) or self.b_dec.shape != (d_out,):
      problems.append(
        f"W_enc {self.W_enc.shape}, b_enc {self.b_enc.shape}, W_dec {self.W_dec.shape} and "
        f"b_dec {self.b_dec.shape} do not fit together"
      )
    if self.activation not in ACTIVATIONS:
      problems.append(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
    if self.activation == "jumprelu" and np.shape(self.threshold) != (n,):
      problems.append(f"a jumprelu transcoder needs a threshold of shape ({n},)")
    if self.activation in TOPK and not (self.k and 0 < self.k <= n):
      problems.append(f"a {self.activation} transcoder needs k in [1, {n}], not {self.k}")
    if self.W_skip is not None and self.W_skip.shape != (d_in, d_out):
      problems.append(f"W_skip {self.W_skip.shape} should be ({d_in}, {d_out})")
    if problems:
      raise ValueError("; ".join(problems))

  @property
  def d_in(self) -> int:
    return self.W_enc.shape[0]

  @property
  def d_out(self) -> int:
    return self.W_dec.shape[1]

  @property
  def n_latents(self) -> int:
    return self.W_enc.shape[1]


def encode(tc: Transcoder, x: np.ndarray) -> np.ndarray:
  """z = act(x W_enc + b_enc)."""
  pre = np.asarray(x, np.float32) @ tc.W_enc + tc.b_enc
  return activate(pre, tc.activation, tc.threshold, tc.k)


def decode(tc: Transcoder, z: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
  """ŷ = z W_dec + b_dec (+ x W_skip, which needs the input x)."""
  y = np.asarray(z, np.float32) @ tc.W_dec + tc.b_dec
  if tc.W_skip is not None:
    if x is None:
      raise ValueError("this transcoder has a skip connection: pass the input x to decode")
    y = y + np.asarray(x, np.float32) @ tc.W_skip
  return y


@dataclasses.dataclass(frozen=True, eq=False)
class CrossLayerTranscoder:
  """A CLT over L layers. W_enc [L, d, n], b_enc [L, n], threshold [L, n] or None,
  W_dec a tuple of L arrays [n, L − i, d], b_dec [L, d], W_skip [L, d, d] or None; hooks per
  layer (jaxsae names)."""

  W_enc: np.ndarray
  b_enc: np.ndarray
  W_dec: tuple[np.ndarray, ...]
  b_dec: np.ndarray
  activation: str = "jumprelu"
  threshold: np.ndarray | None = None
  W_skip: np.ndarray | None = None
  input_hooks: tuple[str | None, ...] = ()
  output_hooks: tuple[str | None, ...] = ()
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n_layers, d, n = self.W_enc.shape
    bad = [
      i for i, w in enumerate(self.W_dec) if w.shape != (n, n_layers - i, self.b_dec.shape[-1])
    ]
    if len(self.W_dec) != n_layers or bad or self.b_enc.shape != (n_layers, n):
      raise ValueError(
        f"CLT shapes do not fit: W_enc {self.W_enc.shape}, b_enc {self.b_enc.shape}, "
        f"{len(self.W_dec)} decoders (layers {bad} of the wrong shape), b_dec {self.b_dec.shape}"
      )
    if self.activation not in ("jumprelu", "relu"):
      raise ValueError(f"CLT activation {self.activation!r} is not jumprelu or relu")
    if self.activation == "jumprelu" and np.shape(self.threshold) != (n_layers, n):
      raise ValueError(f"a jumprelu CLT needs thresholds of shape ({n_layers}, {n})")
    d_out = self.b_dec.shape[-1]
    if self.W_skip is not None and self.W_skip.shape != (n_layers, d, d_out):
      raise ValueError(f"CLT W_skip {self.W_skip.shape} should be ({n_layers}, {d}, {d_out})")

  @property
  def n_layers(self) -> int:
    return self.W_enc.shape[0]


def clt_encode(clt: CrossLayerTranscoder, x: np.ndarray) -> np.ndarray:
  """z [L, B, n] from inputs x [L, B, d]: z_i = act(x_i W_enc[i] + b_enc[i])."""
  pre = np.einsum("lbd,ldn->lbn", np.asarray(x, np.float32), clt.W_enc) + clt.b_enc[:, None]
  threshold = None if clt.threshold is None else clt.threshold[:, None]
  return activate(pre, clt.activation, threshold)


def clt_decode(clt: CrossLayerTranscoder, z: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
  """ŷ [L, B, d]: ŷ_j = Σ_{i ≤ j} z_i W_dec[i][:, j − i] + b_dec[j] (+ x_j W_skip[j])."""
  y = np.zeros((clt.n_layers, z.shape[1], clt.b_dec.shape[-1]), np.float32) + clt.b_dec[:, None]
  for i, w in enumerate(clt.W_dec):
    y[i:] += np.einsum("bn,nld->lbd", z[i], w)
  if clt.W_skip is not None:
    if x is None:
      raise ValueError("this CLT has skip connections: pass the inputs x to clt_decode")
    y += np.einsum("lbd,lde->lbe", np.asarray(x, np.float32), clt.W_skip)
  return y
