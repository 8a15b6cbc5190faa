"""Interventions on an attribution graph's feature nodes: the logit effects the graph predicts
against those of the model (Circuit Tracing §4: "validating graphs with perturbations").

Setting chosen features to `factor` times their activation (0 ablates, 2 doubles) changes them
by Δa = (factor − 1)·a. The graph predicts the rest linearly: with M[t, s] = A[t, s] / a_s (a
target's change per unit of a source feature's activation; every node in the graph is active,
where ReLU and JumpReLU have slope 1), the other features follow

    Δa = e + P M_ff Δa   →   Δa = (I − P M_ff)⁻¹ e      (P: 0 on the chosen rows, held)

and the logits (demeaned, last position) move by M_lf Δa. The model's effect is measured in the
replacement model with the prompt's error terms held (`evals.replacement`): with `frozen=True`
its attention patterns and norm factors are pinned to the prompt's too (the graph's own
assumptions, so the two agree while no feature crosses its threshold); with `frozen=False`
they move, and the gap is what the frozen attention and norms leave out.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxsae.attribution import graph as graph_lib
from jaxsae.attribution.graph import Graph
from jaxsae.evals import replacement
from jaxsae.models.transformer import Transformer
from jaxsae.models.transformer import run as run_model


def predicted_logit_effects(graph: Graph, rows, factor: float) -> np.ndarray:
  """The change of each logit node (demeaned logit) the graph predicts."""
  rows = np.asarray(rows, np.int64)
  F = graph.n_features
  per_unit = graph.adjacency[:, :F] / graph.activations[None, :].astype(np.float64)
  held = np.ones(F)
  held[rows] = 0.0
  e = np.zeros(F)
  e[rows] = (factor - 1.0) * graph.activations[rows]
  delta = np.linalg.solve(np.eye(F) - held[:, None] * per_unit[:F], e)
  return per_unit[graph.logit_slice] @ delta


def actual_logit_effects(
  lm, dictionaries, graph: Graph, rows, factor: float, *, frozen: bool = False
) -> np.ndarray:
  """The change of each logit node in the replacement model (errors held; `frozen`: attention
  patterns and norm factors held too) when the chosen features are scaled by `factor`."""
  rows = np.asarray(rows, np.int64)
  tokens = jnp.asarray(graph.tokens[None])
  scale = {}
  for layer, pos, feature in graph.features[rows]:
    scale.setdefault(int(layer), []).append((int(pos), int(feature)))

  def z_edit(i, z):
    for pos, feature in scale.get(i, ()):
      z = z.at[:, pos, feature].multiply(factor)
    return z

  pinned = {}
  if frozen:
    names = graph_lib.frozen_hooks(lm.config)
    _, captured = run_model(Transformer(lm.config), lm.params, tokens, capture=names)
    pinned = {n: (lambda x, v=captured[n]: v) for n in names}

  def demeaned(logits):
    last = np.asarray(logits[0, -1], np.float64)
    return last[graph.logit_tokens] - last.mean()

  kw = dict(error_terms=True, skip_first=graph.skip_first, extra_edits=pinned)
  base = replacement.run_replacement(lm, dictionaries, tokens, **kw)
  moved = replacement.run_replacement(lm, dictionaries, tokens, z_edit=z_edit, **kw)
  return demeaned(moved) - demeaned(base)
