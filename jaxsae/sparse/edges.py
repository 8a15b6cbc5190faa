"""Circuit size in edges: nonzero weights between two kept nodes (Gao et al. 2025).

Edges, for kept nodes only (W[i, j] != 0 is a weight of the model; matrices as
`jaxsae.models.weights` names them):

  attn.in_i  -> attn.q_j / attn.k_j / attn.v_j      W_Q / W_K / W_V [i, j]        (same layer)
  attn.v_j   -> attn.z_j'                            identity (z is pattern-weighted v): j' = j,
                                                     or under grouped-query attention every
                                                     query head's channel j' reading KV channel j
  attn.z_j   -> reader_c of residual channel c        W_O[j, c]                    (later readers)
  mlp.in_i   -> mlp.post_j                            W_in[i, j] (through the elementwise
                                                     nonlinearity; gated MLPs: the linear branch)
  mlp.in_i   -> mlp.post_j  ("mlp.gate", gated MLPs)  W_gate[i, j]: a second weight, a second edge
  mlp.post_j -> mlp.out_c                             W_out[j, c]
  mlp.out_c  -> reader_c                              identity through the residual stream

A reader of residual channel c is attn.in_c or mlp.in_c of a later sub-block (norm scales are
per channel; a parallel block's MLP reads the block's input, not its attention's output) or the
final residual's channel c. Post-norms scale each channel too, so they add no edges. Queries and
keys meet in a dot product, not through a weight, so q–k pairings are not counted; embeddings,
unembedding and the bigram table are outside the circuit. The same rules apply to dense and
sparse models, so their counts compare directly; in a dense model every weight is nonzero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np

from jaxsae.models import weights
from jaxsae.models.config import TransformerConfig
from jaxsae.sparse import nodes as nodes_lib

IDENTITY_KINDS = ("v->z", "mlp->resid")  # Edges carried by no weight (weight 1.0).


@dataclasses.dataclass(frozen=True)
class Edge:
  """One edge: its kind (as `count_edges` names them), source and destination (site, channel)
  and the weight that carries it (1.0 for identity edges)."""

  kind: str
  src: str
  src_channel: int
  dst: str
  dst_channel: int
  weight: float


def _kernels(params: Mapping, layer: int) -> dict[str, np.ndarray]:
  w = weights.layer_weights(params, layer)

  def flat_in(m):  # (D, heads, K) -> (D, heads K)
    m = np.asarray(m)
    return m.reshape(m.shape[0], -1)

  w_o = np.asarray(w.W_O)
  kernels = {
    "attn.q": flat_in(w.W_Q),
    "attn.k": flat_in(w.W_K),
    "attn.v": flat_in(w.W_V),
    "attn.out": w_o.reshape(-1, w_o.shape[-1]),  # (H K, D)
    "mlp.in": np.asarray(w.W_in),  # (D, F)
    "mlp.out": np.asarray(w.W_out),  # (F, D)
  }
  if w.W_gate is not None:
    kernels["mlp.gate"] = np.asarray(w.W_gate)  # (D, F)
  return kernels


def _v_to_z(config: TransformerConfig) -> np.ndarray:
  """(G K, H K) 0/1: KV channel (g, k) feeds query-head channel (h, k) iff h reads KV head g."""
  heads_HxG = weights.expand_kv_heads(np.eye(config.kv_heads), config.n_heads, axis=0)
  return np.kron(heads_HxG.T, np.eye(config.d_head))


def _readers_after(config: TransformerConfig, layer: int, after_attention: bool) -> list[str]:
  """Residual readers downstream of a write by block `layer`'s attention (or MLP)."""
  same_block_mlp = after_attention and not config.parallel_block
  readers = [f"blocks.{layer}.mlp.in"] if same_block_mlp else []
  for later in range(layer + 1, config.n_layers):
    readers += [f"blocks.{later}.attn.in", f"blocks.{later}.mlp.in"]
  return readers + [nodes_lib.FINAL_SITE]


def _kept(config: TransformerConfig, kept: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Boolean keep-vectors for every node site (sites absent from `kept` count as all kept)."""
  nodes_lib.check_masks(config, kept)
  return {
    s: np.asarray(kept[s], bool) if s in kept else np.ones(nodes_lib.site_width(config, s), bool)
    for s in nodes_lib.node_sites(config)
  }


def _weighted(w: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Boolean (src, dst) matrix of nonzero weights between kept endpoints."""
  return (w != 0) & src[:, None] & dst[None, :]


def _links(params, config: TransformerConfig, kept: Mapping[str, np.ndarray]):
  """(kind, src site, dst site, boolean edge matrix or vector, weights or None) for every pair
  of sites that edges can join."""
  k = _kept(config, kept)
  for layer in range(config.n_layers):
    w = _kernels(params, layer)

    def site(name, layer=layer):
      return f"blocks.{layer}.{name}"

    for proj in ("attn.q", "attn.k", "attn.v"):
      yield (
        "qkv",
        site("attn.in"),
        site(proj),
        _weighted(w[proj], k[site("attn.in")], k[site(proj)]),
        w[proj],
      )
    if config.kv_heads == config.n_heads:
      yield "v->z", site("attn.v"), site("attn.z"), k[site("attn.v")] & k[site("attn.z")], None
    else:
      identity = _v_to_z(config)
      yield (
        "v->z",
        site("attn.v"),
        site("attn.z"),
        _weighted(identity, k[site("attn.v")], k[site("attn.z")]),
        identity,
      )
    for reader in _readers_after(config, layer, after_attention=True):
      yield (
        "attn->resid",
        site("attn.z"),
        reader,
        _weighted(w["attn.out"], k[site("attn.z")], k[reader]),
        w["attn.out"],
      )
    yield (
      "mlp.in",
      site("mlp.in"),
      site("mlp.post"),
      _weighted(w["mlp.in"], k[site("mlp.in")], k[site("mlp.post")]),
      w["mlp.in"],
    )
    if "mlp.gate" in w:
      yield (
        "mlp.gate",
        site("mlp.in"),
        site("mlp.post"),
        _weighted(w["mlp.gate"], k[site("mlp.in")], k[site("mlp.post")]),
        w["mlp.gate"],
      )
    yield (
      "mlp.out",
      site("mlp.post"),
      site("mlp.out"),
      _weighted(w["mlp.out"], k[site("mlp.post")], k[site("mlp.out")]),
      w["mlp.out"],
    )
    for reader in _readers_after(config, layer, after_attention=False):
      yield "mlp->resid", site("mlp.out"), reader, k[site("mlp.out")] & k[reader], None


def count_edges(
  params, config: TransformerConfig, kept: Mapping[str, np.ndarray]
) -> dict[str, int]:
  """{"total": edges, and one count per kind ("qkv", "v->z", "attn->resid", "mlp.in",
  "mlp.gate" (gated MLPs only), "mlp.out", "mlp->resid")} of the circuit that keeps the nodes
  `kept` ({site: bool (width,)}; sites left out are entirely kept, so `{}` counts the whole
  model)."""
  counts: dict[str, int] = {}
  for kind, _, _, edges, _ in _links(params, config, kept):
    counts[kind] = counts.get(kind, 0) + int(np.count_nonzero(edges))
  counts["total"] = sum(counts.values())
  return counts


def edge_list(params, config: TransformerConfig, kept: Mapping[str, np.ndarray]) -> Iterator[Edge]:
  """Every edge of the circuit, with its weight (1.0 for identity edges)."""
  for kind, src, dst, edges, values in _links(params, config, kept):
    if edges.ndim == 1:
      for c in np.flatnonzero(edges):
        yield Edge(kind, src, int(c), dst, int(c), 1.0)
    else:
      for i, j in zip(*np.nonzero(edges), strict=True):
        yield Edge(kind, src, int(i), dst, int(j), float(values[i, j]))
