"""The inputs of a block's linear layers: which hook carries each one, and which kernels read it.

    attn.in   (B,T,D)    -> query, key, value kernels (D,H,K)   after attn_norm (foldable)
    attn.z    (B,T,H,K)  -> out kernel (H,K,D)                  after value (foldable into W_V)
    mlp.in    (B,T,D)    -> fc_in kernel (D,F)                  after mlp_norm (foldable)
    mlp.post  (B,T,F)    -> fc_out kernel (F,D)                 after the GELU (not foldable)

These are every GEMM of the blocks whose operands are an activation and a weight (SmoothQuant's
W8A8 quantizes exactly these; the attention BMMs q·k and pattern·v, the embedding and the
unembedding stay in float here). The unembedding's input, `final.normed`, is the one other
linear input: its statistics are measured (`UNEMBED_INPUT`), it is not quantized. A channel of an input is one entry of its last axis, or one
(head, dim) pair for attn.z.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxsae.models import hooks as hooks_lib


@dataclasses.dataclass(frozen=True)
class LinearInput:
  site: str  # A block site of jaxsae.models.hooks.
  module: str  # The block's submodule holding the kernels ("attn" or "mlp").
  kernels: tuple[str, ...]  # Kernels that read this input.
  input_axes: int  # How many leading kernel axes are input channels.


LINEAR_INPUTS = {
  "attn.in": LinearInput("attn.in", "attn", ("query", "key", "value"), 1),
  "attn.z": LinearInput("attn.z", "attn", ("out",), 2),
  "mlp.in": LinearInput("mlp.in", "mlp", ("fc_in",), 1),
  "mlp.post": LinearInput("mlp.post", "mlp", ("fc_out",), 1),
}
SITES = tuple(LINEAR_INPUTS)
UNEMBED_INPUT = "final.normed"


def hook_name(layer: int, site: str) -> str:
  return hooks_lib.block(layer, site)


def all_hooks(n_layers: int, sites: tuple[str, ...] = SITES) -> list[str]:
  """Hook names of every linear input of a model, in forward order."""
  return [hook_name(layer, site) for layer in range(n_layers) for site in sites]


def kernels(params: Any, layer: int, site: str) -> list[np.ndarray]:
  """The kernels of block `layer` that read the input at `site`."""
  spec = LINEAR_INPUTS[site]
  block = params[f"blocks_{layer}"][spec.module]
  return [block[name]["kernel"] for name in spec.kernels]


def weight_channel_absmax(params: Any, layer: int, site: str) -> np.ndarray:
  """max |W_j| per input channel j over every output of every kernel reading `site`
  (SmoothQuant's max(|W_j|)), flattened to the input's channel count."""
  spec = LINEAR_INPUTS[site]
  per_kernel = []
  for kernel in kernels(params, layer, site):
    w = np.abs(np.asarray(kernel, np.float32))
    per_kernel.append(w.reshape(int(np.prod(w.shape[: spec.input_axes])), -1).max(axis=1))
  return np.max(per_kernel, axis=0)
