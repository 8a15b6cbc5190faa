"""One accessor for the weights of a `Transformer` block, for code outside the model: circuits,
edges, the sparsity projection, SmoothQuant and fake quantization.

Block i is `blocks_{i}` in the parameter tree (D d_model, H n_heads, G kv_heads, K d_head,
F d_mlp; row vectors, so a layer computes x @ W):

    role     path in blocks_i        shape   input axes  neuron axes  computes
    W_Q      attn/query/kernel       D×H×K   (0,)        (1, 2)       q = attn.in W_Q  [+ b_Q]
    W_K      attn/key/kernel         D×G×K   (0,)        (1, 2)       k = attn.in W_K  [+ b_K]
    W_V      attn/value/kernel       D×G×K   (0,)        (1, 2)       v = attn.in W_V  [+ b_V]
    W_O      attn/out/kernel         H×K×D   (0, 1)      (0, 1)       attn.z W_O  [+ b_O]
    W_in     mlp/fc_in/kernel        D×F     (0,)        (1,)         mlp.pre, or gated: mlp.linear
    W_gate   mlp/fc_gate/kernel      D×F     (0,)        (1,)         gated only: mlp.pre
    W_out    mlp/fc_out/kernel       F×D     (0,)        (0,)         mlp.post W_out [+ b_out]

A kernel's biases sit beside it (`bias`, shaped like its output axes). The MLP is
W_out(act(x W_in)), or gated W_out(act(x W_gate) * x W_in): W_in is always the branch without
the nonlinearity of a gated MLP, and the only input matrix of a plain one. The neuron axes index
an MLP neuron or an attention channel (h, k): the slices that the sparsity projection keeps
alive and that circuits count as nodes. Query head h reads KV head h // (H / G);
`expand_kv_heads` gives W_K, W_V per query head (D×H×K).

Norms (`NORMS`): attn_norm and mlp_norm before each sublayer, attn_post_norm and mlp_post_norm
on its output (post-norm models), attn/q_norm and attn/k_norm over K (QK-norm), final_norm.
Each multiplies by a gain (offset + w), w its stored `scale`; the offset is the config's
norm_scale_offset for RMSNorm (Gemma: 1) and 0 otherwise. `Norm.gain` is the gain as applied.

What a layer has is read from the tree (a gate, post-norms, QK-norm, biases, G), so readers see a
new family's matrices as soon as the model has them; only the offset comes from the config.
Code that writes into the tree uses `kernel_path`, `bias_path` and `Norm.path` with `set_leaf`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxsae.models.config import TransformerConfig


@dataclasses.dataclass(frozen=True)
class Linear:
  """Where a role's kernel lives in block i and how its axes split (table above)."""

  module: tuple[str, ...]  # Inside blocks_i, e.g. ("attn", "query").
  input_axes: int  # Leading kernel axes that index the input channel.
  neuron_axes: tuple[int, ...]  # Kernel axes that index an MLP neuron / attention channel.


LINEARS = {
  "W_Q": Linear(("attn", "query"), 1, (1, 2)),
  "W_K": Linear(("attn", "key"), 1, (1, 2)),
  "W_V": Linear(("attn", "value"), 1, (1, 2)),
  "W_O": Linear(("attn", "out"), 2, (0, 1)),
  "W_in": Linear(("mlp", "fc_in"), 1, (1,)),
  "W_gate": Linear(("mlp", "fc_gate"), 1, (1,)),
  "W_out": Linear(("mlp", "fc_out"), 1, (0,)),
}
"""role -> its kernel's place and axes; W_gate exists in gated MLPs only."""
ROLES = tuple(LINEARS)
OPTIONAL_ROLES = ("W_gate",)

NORMS = {
  "attn_norm": ("attn_norm",),
  "mlp_norm": ("mlp_norm",),
  "attn_post_norm": ("attn_post_norm",),
  "mlp_post_norm": ("mlp_post_norm",),
  "q_norm": ("attn", "q_norm"),
  "k_norm": ("attn", "k_norm"),
}
"""Block norm -> its module inside blocks_i (the post-norms and QK-norms exist only where the
config has them)."""
FINAL_NORM = ("final_norm",)

Path = tuple[str, ...]


def block_name(layer: int) -> str:
  return f"blocks_{layer}"


def kernel_path(layer: int, role: str) -> Path:
  """('blocks_0', 'attn', 'query', 'kernel') for (0, 'W_Q')."""
  return (block_name(layer), *LINEARS[role].module, "kernel")


def bias_path(layer: int, role: str) -> Path:
  return (block_name(layer), *LINEARS[role].module, "bias")


def norm_path(layer: int | None, name: str) -> Path:
  """The norm module's path: ('blocks_0', 'attn', 'q_norm'); layer None for the final norm."""
  return FINAL_NORM if layer is None else (block_name(layer), *NORMS[name])


def get_leaf(tree: Mapping, path: Path, default: Any = None) -> Any:
  """tree[p0][p1]...; `default` where any key is missing."""
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return default
    tree = tree[key]
  return tree


def set_leaf(tree: dict, path: Path, value: Any) -> None:
  """tree[p0]...[pn] = value, in place (the caller owns the containers)."""
  for key in path[:-1]:
    tree = tree[key]
  tree[path[-1]] = value


def role_at(path: Path) -> tuple[int, str, str] | None:
  """(layer, role, leaf name) of a block linear's kernel or bias path; None for anything else."""
  if len(path) < 2 or not path[0].startswith("blocks_") or not path[0][7:].isdigit():
    return None
  for role, spec in LINEARS.items():
    if tuple(path[1:-1]) == spec.module:
      return int(path[0][7:]), role, path[-1]
  return None


def roles(params: Mapping, layer: int) -> tuple[str, ...]:
  """The roles whose kernel block `layer` has, in `ROLES` order (W_gate in gated MLPs only)."""
  return tuple(r for r in ROLES if get_leaf(params, kernel_path(layer, r)) is not None)


def norm_offset(config: TransformerConfig | None) -> float:
  """The offset the model's norms add to their stored scale (RMSNorm's norm_scale_offset)."""
  if config is None or config.norm != "rmsnorm":
    return 0.0
  return float(config.norm_scale_offset)


@dataclasses.dataclass(frozen=True)
class Norm:
  """A norm as the forward applies it: y = normalize(x) * gain [+ bias], gain = offset + scale."""

  gain: Any
  bias: Any | None
  offset: float
  path: Path  # The module; its leaves are path + ("scale",) and path + ("bias",).

  def scale_for(self, gain: Any) -> Any:
    """The stored scale that makes the applied gain `gain`: gain - offset."""
    return gain - self.offset if self.offset else gain


def read_norm(params: Mapping, path: Path, config: TransformerConfig | None = None) -> Norm | None:
  """The norm at `path` (see `norm_path`), or None where the model has none."""
  module = get_leaf(params, path)
  if module is None:
    return None
  offset = norm_offset(config)
  scale = module["scale"]
  return Norm(offset + scale if offset else scale, module.get("bias"), offset, path)


def expand_kv_heads(x: Any, n_heads: int, axis: int = -2) -> Any:
  """Per-KV-head values (axis `axis` of size G) repeated per query head (size n_heads): query
  head h gets KV head h // (n_heads / G). W_K (D,G,K) -> (D,H,K); b_K (G,K) -> (H,K)."""
  groups = x.shape[axis]
  if groups == n_heads:
    return x
  xp = np if isinstance(x, np.ndarray) else jnp
  return xp.repeat(x, n_heads // groups, axis=axis)


@dataclasses.dataclass(frozen=True)
class LayerWeights:
  """Block `layer`'s weights as the forward uses them (shapes in the module docstring). Kernels
  and biases are the tree's own arrays (None where absent); norm gains include their offset."""

  layer: int
  W_Q: Any
  W_K: Any
  W_V: Any
  W_O: Any
  W_in: Any
  W_gate: Any | None
  W_out: Any
  b_Q: Any | None
  b_K: Any | None
  b_V: Any | None
  b_O: Any | None
  b_in: Any | None
  b_gate: Any | None
  b_out: Any | None
  attn_norm: Norm
  mlp_norm: Norm
  attn_post_norm: Norm | None
  mlp_post_norm: Norm | None
  q_norm: Norm | None
  k_norm: Norm | None

  @property
  def n_heads(self) -> int:
    return self.W_Q.shape[1]

  @property
  def kv_heads(self) -> int:
    return self.W_K.shape[1]

  @property
  def W_K_per_head(self) -> Any:
    """W_K repeated per query head, (D, H, K)."""
    return expand_kv_heads(self.W_K, self.n_heads)

  @property
  def W_V_per_head(self) -> Any:
    """W_V repeated per query head, (D, H, K)."""
    return expand_kv_heads(self.W_V, self.n_heads)

  def kernels(self) -> dict[str, Any]:
    """{role: kernel} of the kernels this layer has."""
    return {r: getattr(self, r) for r in ROLES if getattr(self, r) is not None}


def layer_weights(
  params: Mapping, layer: int, config: TransformerConfig | None = None
) -> LayerWeights:
  """Block `layer` of `params`. `config` supplies the norms' gain offset; without it the gain is
  the stored scale, right for every model with norm_scale_offset 0."""
  if get_leaf(params, (block_name(layer),)) is None:
    raise KeyError(f"the parameters have no {block_name(layer)}")
  values: dict[str, Any] = {"layer": layer}
  for role in ROLES:
    values[role] = get_leaf(params, kernel_path(layer, role))
    values["b_" + role[2:]] = get_leaf(params, bias_path(layer, role))
  for name in NORMS:
    values[name] = read_norm(params, norm_path(layer, name), config)
  return LayerWeights(**values)
