"""Device memory of an attribution graph, read from XLA's buffer assignment before anything runs.

`graph.compute` runs these jitted programs once per batch of B target nodes:

    pullback: the frozen forward and B vector-Jacobian products, giving each target's gradient
              with respect to every write site: B × T × d (embedding) and B × L × T × d (MLP
              outputs); one program for feature targets, one for logit targets
    edges:    those gradients against every source's write: the F × L × d feature writes
              (a_s·W_dec, one row per target layer), L × T × d errors and T × d embeddings,
              a B × F block of feature edges summed one target layer at a time

and fills the N × N adjacency on the host (N = F + L·T + T + logits, float32). `graph_memory`
lowers the three programs for a graph of F feature nodes over T tokens with the model's own
parameters and abstract inputs (ShapeDtypeStructs: nothing is allocated), compiles them, and
reads `memory_analysis()` as `jaxsae.bench.memory` does: peak = argument + output + temp −
alias. The pullbacks (of feature targets and of logit targets) run one after the other, with
the edges' inputs that last the whole graph (`held`: the feature writes and positions, the
errors and the embeddings) already on the device, so

    device peak = max(pullback peak + held, edges peak)

(the edges' peak counts `held` and the gradients among its arguments). Compiled here for
XLA:CPU; an accelerator's buffer assignment differs in detail, not in what is live.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.attribution import graph as graph_lib
from jaxsae.bench import memory as memory_lib
from jaxsae.evals import replacement
from jaxsae.models.language_model import LanguageModel
from jaxsae.models.transformer import Transformer


def graph_memory(
  lm: LanguageModel,
  dictionaries: replacement.Dictionaries,
  n_tokens: int,
  n_features: int,
  batch_size: int = 64,
  n_logits: int = 10,
) -> dict[str, int]:
  """Bytes of a graph of `n_features` feature nodes over `n_tokens` tokens: the compiled peaks
  (`pullback_peak`: the larger of the two pullbacks', `edges_peak`), the inputs held through
  the graph (`held`), the device's peak (`device_peak`) and the host's adjacency
  (`adjacency`)."""
  sources, targets = replacement._plan(dictionaries)
  L, T, B, d = len(sources), n_tokens, batch_size, lm.config.d_model
  tokens_1xT = jnp.zeros((1, T), jnp.int32)
  ins, outs = [s.hook for s in sources], [t.hook for t in targets]
  rows_for = graph_lib._pullbacks(lm, Transformer(lm.config), tokens_1xT, ins, outs, targets)
  cotangents = [
    jax.ShapeDtypeStruct((B, 1, T, int(s.W_enc.shape[0])), jnp.float32) for s in sources
  ]
  features = jax.jit(rows_for.features).lower(lm.params, cotangents).compile()
  logit_ids = jax.ShapeDtypeStruct((B,), jnp.int32)
  logits = jax.jit(rows_for.logits).lower(lm.params, logit_ids).compile()
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
  held = [f32(n_features, L, d), jax.ShapeDtypeStruct((n_features,), jnp.int32)]
  held += [f32(L, T, d), f32(T, d)]  # Feature writes and positions, errors, embeddings.
  edges = graph_lib._edges.lower(f32(B, T, d), f32(B, L, T, d), *held).compile()
  peaks = {
    "pullback_peak": max(map(memory_lib.compiled_peak_bytes, (features, logits))),
    "edges_peak": memory_lib.compiled_peak_bytes(edges),
  }
  held_bytes = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in held)
  n = n_features + L * T + T + n_logits
  return {
    **peaks,
    "held": held_bytes,
    "device_peak": max(peaks["pullback_peak"] + held_bytes, peaks["edges_peak"]),
    "adjacency": n * n * np.dtype(np.float32).itemsize,
  }
