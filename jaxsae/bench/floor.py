"""What a step cannot beat on this machine, measured in the same process.

Matmul peak: the FLOP/s of a jitted float32 (B×d) @ (d×n) matmul, the encoder's shape.
Both are measured with the batch's rows split over every device, as the step splits them.

TopK floor: the jitted encoder and its top-k, `top_k((x − b_dec) W_enc + b_enc, k)`. A k-sparse
step needs the dense encoder forward and the selection; everything else (the k-sparse decode,
the gradients of the k chosen latents) is O(B·k·d), far below it when k ≪ n.

Dense floor (every other architecture): dense FLOPs of one step / matmul peak. With
pre = (x − b_dec) W_enc and x̂ = z W_dec, each matmul below costs 2·B·d·n FLOPs:

  forward    pre = (x − b_dec) W_enc          1
             x̂ = z W_dec                      1
  backward   ∂z = ∂x̂ W_decᵀ                   1
             ∂W_dec = zᵀ ∂x̂                    1
             ∂W_enc = (x − b_dec)ᵀ ∂pre        1

so 5 · 2·B·d·n = 10·B·d·n. b_dec's gradient through the encoder is −(Σ_B ∂pre) W_encᵀ, 2·d·n
FLOPs (`SparseAutoencoder.centered_matmul`; plain autodiff would form the B×d product ∂pre W_encᵀ
as a sixth matmul), and x is data. Gated adds the magnitude encoder (forward and ∂W: 2) and the
gate-path reconstruction through the frozen decoder (forward and ∂z: 2): 9 matmuls. BatchTopK's
dense path is counted like ReLU. AuxK's dense decode (TopK, BatchTopK) is not counted: it only works when latents are
dead. Elementwise work (activations, penalties, Adam) is O(B·n) or O(d·n) and not counted.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsae import sharding
from jaxsae.bench import timing

# Dense matmuls of shape B×d×n per training step (see the module docstring).
MATMULS = {
  "relu": 5,
  "jumprelu": 5,
  "prolu_relu": 5,
  "prolu_ste": 5,
  "batchtopk": 5,
  "topk": 5,
  "gated": 9,
}
TOPK_FLOOR = ("topk",)


def matmul_flops(batch: int, d: int, n: int) -> float:
  return 2.0 * batch * d * n


def dense_step_flops(architecture: str, batch: int, d: int, n: int) -> float:
  """FLOPs of the dense matmuls of one training step of `architecture`."""
  return MATMULS[architecture] * matmul_flops(batch, d, n)


def _operands(batch: int, d: int, n: int, seed: int = 0):
  """x (B×d), W_enc (d×n), b_enc (n), b_dec (d): float32, x's rows split over every device (as
  the trainer's data axis splits a batch, so that each device's share runs in parallel) and
  the rest replicated."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, d), dtype=np.float32)
  w = rng.standard_normal((d, n), dtype=np.float32) / np.float32(d**0.5)
  b_enc = rng.standard_normal(n, dtype=np.float32) * np.float32(0.01)
  mesh = sharding.make_mesh()
  rows = mesh.size if batch % mesh.size == 0 else 1
  split = NamedSharding(mesh, P(sharding.DATA if rows > 1 else None))
  replicated = NamedSharding(mesh, P())
  return (
    jax.device_put(x, split),
    *(jax.device_put(a, replicated) for a in (w, b_enc, np.zeros(d, np.float32))),
  )


@dataclasses.dataclass(frozen=True)
class Peak:
  timing: timing.Timing
  flops: float  # Per matmul.

  @property
  def flops_per_s(self) -> float:
    return self.flops / self.timing.seconds


def matmul_peak(batch: int, d: int, n: int, repeats: int = 5) -> Peak:
  """Measured FLOP/s of the jitted float32 (batch×d) @ (d×n) matmul."""
  x, w, _, _ = _operands(batch, d, n)
  fn = jax.jit(jnp.matmul)
  return Peak(timing.time_calls(lambda: fn(x, w), repeats), matmul_flops(batch, d, n))


def topk_floor(batch: int, d: int, n: int, k: int, repeats: int = 5) -> timing.Timing:
  """Seconds of the jitted encoder matmul and top-k at this shape."""
  x, w, b_enc, b_dec = _operands(batch, d, n)

  @jax.jit
  def encode_select(x, w, b_enc, b_dec):
    return jax.lax.top_k((x - b_dec) @ w + b_enc, k)

  return timing.time_calls(lambda: encode_select(x, w, b_enc, b_dec), repeats)


@dataclasses.dataclass(frozen=True)
class Floor:
  kind: str  # "encoder+top_k" or "dense FLOPs / peak".
  seconds: float
  peak_flops_per_s: float
  dense_flops: float  # Of one step, counted as in the module docstring.


def floor(
  architecture: str,
  *,
  d: int,
  n: int,
  k: int,
  batch: int,
  repeats: int = 5,
  peak: Peak | None = None,
) -> Floor:
  """The floor of one step of `architecture`; `peak` (measured once per shape) is reused."""
  peak = peak or matmul_peak(batch, d, n, repeats)
  dense = dense_step_flops(architecture, batch, d, n)
  if architecture in TOPK_FLOOR:
    seconds = topk_floor(batch, d, n, k, repeats).seconds
    return Floor("encoder+top_k", seconds, peak.flops_per_s, dense)
  return Floor("dense FLOPs / peak", dense / peak.flops_per_s, peak.flops_per_s, dense)
