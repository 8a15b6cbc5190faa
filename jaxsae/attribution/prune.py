"""Influence, pruning and the graph's scores, as circuit-tracer computes them (Circuit Tracing
§3.3–3.4).

    Â = |A| with each row divided by its sum           (the share of a target's input)
    influence = w Â + w Â² + …                         (w: the logit nodes' probabilities)

A node is kept while the nodes ranked above it hold less than `node_threshold` of the total
influence (tokens and logits always); then, on the pruned matrix, an edge is kept while the
edges above it hold less than `edge_threshold` of the edge scores Â[t, s]·(influence_t + w_t);
feature and error nodes left with no outgoing edge, and features with no incoming one, go too,
until nothing changes. Â's powers end: the graph is acyclic (a node only reads earlier layers).

Scores of a graph (unpruned):
  replacement = token influence / (token + error influence): how much of the end-to-end
                influence reaches the logits from the prompt rather than from error nodes;
  completeness = Σ_t (1 − Â[t, errors])·(influence_t + w_t) / Σ_t (influence_t + w_t): the
                 influence-weighted share of each node's input that comes from non-error nodes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsae.attribution.graph import Graph


def normalize(adjacency: np.ndarray) -> np.ndarray:
  a = np.abs(np.asarray(adjacency, np.float64))
  return a / np.maximum(a.sum(1, keepdims=True), 1e-10)


def influence(normalized: np.ndarray, logit_weights: np.ndarray, max_iter: int = 1000):
  """w Â + w Â² + … (a DAG's powers vanish; more than `max_iter` of them is a cycle)."""
  current = logit_weights @ normalized
  total = current.copy()
  for _ in range(max_iter):
    if not current.any():
      return total
    current = current @ normalized
    total += current
  raise ValueError("influence did not converge: the adjacency matrix has a cycle")


def logit_weights(graph: Graph) -> np.ndarray:
  w = np.zeros(graph.adjacency.shape[0])
  w[graph.logit_slice] = graph.logit_probabilities
  return w


def _threshold(scores: np.ndarray, fraction: float) -> float:
  ordered = np.sort(scores.ravel())[::-1]
  cumulative = np.cumsum(ordered) / max(ordered.sum(), 1e-30)
  return ordered[min(int(np.searchsorted(cumulative, fraction)), len(ordered) - 1)]


@dataclasses.dataclass
class Pruned:
  node_mask: np.ndarray  # (N,) bool
  edge_mask: np.ndarray  # (N, N) bool: [target, source]
  cumulative_influence: np.ndarray  # (N,): each node's rank as a cumulative share


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
  for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"{name}={value} must be in [0, 1]")
  w = logit_weights(graph)
  node_influence = influence(normalize(graph.adjacency), w)
  keep = node_influence >= _threshold(node_influence, node_threshold)
  fixed = graph.token_slice.start  # Tokens and logits are always kept.
  keep[fixed:] = True
  pruned = np.where(keep[:, None] & keep[None, :], graph.adjacency, 0.0)
  normalized = normalize(pruned)
  edge_scores = normalized * (influence(normalized, w) + w)[:, None]
  edges = edge_scores >= _threshold(edge_scores, edge_threshold)
  while True:
    before = keep.copy()
    edges &= keep[:, None] & keep[None, :]
    keep[:fixed] &= edges[:, :fixed].any(0)  # Features and errors need an outgoing edge,
    keep[: graph.n_features] &= edges[: graph.n_features].any(1)  # features an incoming one.
    if (keep == before).all():
      break
  order = np.argsort(-node_influence)
  cumulative = np.empty_like(node_influence)
  cumulative[order] = np.cumsum(node_influence[order]) / max(node_influence.sum(), 1e-30)
  return Pruned(keep, edges, cumulative)


def scores(graph: Graph) -> dict[str, float]:
  """{"replacement": …, "completeness": …} of the unpruned graph (module docstring)."""
  w = logit_weights(graph)
  normalized = normalize(graph.adjacency)
  node_influence = influence(normalized, w)
  tokens = node_influence[graph.token_slice].sum()
  errors = node_influence[graph.error_slice].sum()
  non_error = 1.0 - normalized[:, graph.error_slice].sum(1)
  output = node_influence + w
  return {
    "replacement": float(tokens / max(tokens + errors, 1e-30)),
    "completeness": float((non_error * output).sum() / max(output.sum(), 1e-30)),
  }
