"""The inputs of a block's linear layers: which hook carries each one, and which kernels read it
(roles of `jaxsae.models.weights`).

    attn.in   (B,T,D)    -> W_Q (D,H,K), W_K, W_V (D,G,K)       after attn_norm (foldable)
    attn.z    (B,T,H,K)  -> W_O (H,K,D)                         after W_V (foldable into it)
    mlp.in    (B,T,D)    -> W_in (D,F) [and W_gate (D,F)]       after mlp_norm (foldable)
    mlp.post  (B,T,F)    -> W_out (F,D)                         after the nonlinearity (not)

These are every GEMM of the blocks whose operands are an activation and a weight (SmoothQuant's
W8A8 quantizes exactly these; the attention BMMs q·k and pattern·v, the embedding and the
unembedding stay in float here). A gated MLP's mlp.in feeds two kernels, the gate and the linear
branch. The unembedding's input, `final.normed`, is the one other linear input: its statistics
are measured (`UNEMBED_INPUT`), it is not quantized. A channel of an input is one entry of its
last axis, or one (head, dim) pair for attn.z.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxsae.models import hooks as hooks_lib
from jaxsae.models import weights


@dataclasses.dataclass(frozen=True)
class LinearInput:
  site: str  # A block site of jaxsae.models.hooks.
  roles: tuple[str, ...]  # jaxsae.models.weights roles of the kernels that may read it.

  @property
  def input_axes(self) -> int:
    """How many leading kernel axes are input channels."""
    return weights.LINEARS[self.roles[0]].input_axes


LINEAR_INPUTS = {
  "attn.in": LinearInput("attn.in", ("W_Q", "W_K", "W_V")),
  "attn.z": LinearInput("attn.z", ("W_O",)),
  "mlp.in": LinearInput("mlp.in", ("W_in", "W_gate")),  # W_gate: gated MLPs only.
  "mlp.post": LinearInput("mlp.post", ("W_out",)),
}
SITES = tuple(LINEAR_INPUTS)
UNEMBED_INPUT = "final.normed"


def hook_name(layer: int, site: str) -> str:
  return hooks_lib.block(layer, site)


def all_hooks(n_layers: int, sites: tuple[str, ...] = SITES) -> list[str]:
  """Hook names of every linear input of a model, in forward order."""
  return [hook_name(layer, site) for layer in range(n_layers) for site in sites]


def reader_roles(params: Any, layer: int, site: str) -> tuple[str, ...]:
  """The roles of block `layer`'s kernels that read the input at `site` (those it has)."""
  present = weights.roles(params, layer)
  return tuple(r for r in LINEAR_INPUTS[site].roles if r in present)


def kernels(params: Any, layer: int, site: str) -> list[np.ndarray]:
  """The kernels of block `layer` that read the input at `site`."""
  return [
    weights.get_leaf(params, weights.kernel_path(layer, r))
    for r in reader_roles(params, layer, site)
  ]


def weight_channel_absmax(params: Any, layer: int, site: str) -> np.ndarray:
  """max |W_j| per input channel j over every output of every kernel reading `site`
  (SmoothQuant's max(|W_j|)), flattened to the input's channel count."""
  spec = LINEAR_INPUTS[site]
  per_kernel = []
  for kernel in kernels(params, layer, site):
    w = np.abs(np.asarray(kernel, np.float32))
    per_kernel.append(w.reshape(int(np.prod(w.shape[: spec.input_axes])), -1).max(axis=1))
  return np.max(per_kernel, axis=0)
