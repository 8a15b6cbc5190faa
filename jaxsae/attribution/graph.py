"""Attribution graphs (Ameisen et al. 2025, "Circuit Tracing", §3): the direct effects among a
prompt's active transcoder features, error nodes, token embeddings and top logits, in the local
replacement model.

The local replacement model is the original forward pass with every MLP output replaced by the
dictionaries' reconstruction plus an error term (the same values, `evals.replacement`), and with
the attention patterns and the norms' 1/σ held at their values on this prompt. The residual
stream is then linear in what is written to it, so the direct effect of source s on target t is

    A[t, s] = ⟨v_s, ∂r_t / ∂(write at s)⟩

with v_s the source's write: a_s·W_dec[s→l′] for a feature (every layer l′ it writes, for a
CLT), the error e_l′,p for an error node, the embedding for a token node; and r_t the target's
read: a feature's pre-activation x_l,p·W_enc[:, f] (its encoder row at its layer's input hook)
or a logit minus the mean logit at the last position. The gradients come from one jitted,
vmapped vector-Jacobian product of the frozen forward pass per batch of targets: the patterns
and 1/σ are `stop_gradient` edits at their hook sites (`attn.pattern`, `*.norm_factor`), and
each MLP output hook returns sg(value) + a zero the gradient is taken against, so the effect of
a source reaches a target only through the residual stream (direct effects; no path through an
MLP or a transcoder's encoder). A skip transcoder's x·W_skip is linear in the residual stream,
so it stays a path: the output hook adds x·W_skip − sg(x·W_skip) (circuit-tracer does the same).

Positions before `skip_first` (Gemma's BOS, the attention sink) are constants of the prompt's
start: their features are dropped and their error vectors zeroed, so they enter no node, like
the dictionaries' biases (circuit-tracer's convention, which `tests/test_circuit_tracer_agreement`
checks edge by edge against circuit-tracer 0.5.0). One difference from circuit-tracer stays: a
token node's write is the embedding the residual stream receives, `embed.tok`, times √d where
the model scales it (Gemma); circuit-tracer's NNSight backend writes the unscaled embedding row
(`embed_weight[tokens]`), so its token edges on Gemma are 1/√d of the direct effect.

Nodes are ordered as circuit-tracer orders them: active features (layer, position, index),
error nodes (layer-major, L·T), token nodes (T), logit nodes (K); `adjacency[target, source]`.
Logits: the fewest top tokens whose probabilities sum to `desired_probability`, at most
`max_logits` (circuit-tracer's rule).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.evals import replacement
from jaxsae.models import hooks as hooks_lib
from jaxsae.models.language_model import LanguageModel
from jaxsae.models.transformer import Transformer
from jaxsae.models.transformer import run as run_model


class Node(NamedTuple):
  """What node i of a graph is: kind "feature" (index: the feature), "error", "token" (index:
  the token id) or "logit" (index: the token id, rank: its place among the logits)."""

  kind: str
  layer: int | None
  pos: int
  index: int = -1
  rank: int = -1


@dataclasses.dataclass
class Graph:
  """A prompt's attribution graph. `features` rows are (layer, position, feature index)."""

  tokens: np.ndarray  # (T,)
  features: np.ndarray  # (F, 3) int
  activations: np.ndarray  # (F,)
  logit_tokens: np.ndarray  # (K,)
  logit_probabilities: np.ndarray  # (K,)
  adjacency: np.ndarray  # (N, N): [target, source]
  n_layers: int
  skip_first: int = 0  # Leading positions with neither features nor errors (constants).

  @property
  def n_pos(self) -> int:
    return len(self.tokens)

  @property
  def n_features(self) -> int:
    return len(self.features)

  @property
  def error_slice(self) -> slice:
    return slice(self.n_features, self.n_features + self.n_layers * self.n_pos)

  @property
  def token_slice(self) -> slice:
    start = self.error_slice.stop
    return slice(start, start + self.n_pos)

  @property
  def logit_slice(self) -> slice:
    return slice(self.token_slice.stop, self.adjacency.shape[0])

  def node(self, i: int) -> Node:
    """Node i, by circuit-tracer's order (module docstring)."""
    if i < self.n_features:
      layer, pos, feature = (int(v) for v in self.features[i])
      return Node("feature", layer, pos, feature)
    if i < self.token_slice.start:
      layer, pos = divmod(i - self.n_features, self.n_pos)
      return Node("error", layer, pos)
    if i < self.logit_slice.start:
      pos = i - self.token_slice.start
      return Node("token", None, pos, int(self.tokens[pos]))
    k = i - self.logit_slice.start
    return Node("logit", None, self.n_pos - 1, int(self.logit_tokens[k]), k)


def salient_logits(logits_V, max_logits: int, desired_probability: float):
  """(token ids, probabilities): the fewest top tokens reaching `desired_probability`."""
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits_V, jnp.float32)), np.float64)
  top = np.argsort(-probs)[:max_logits]
  cutoff = int(np.searchsorted(np.cumsum(probs[top]), desired_probability)) + 1
  top = top[:cutoff]
  return top, probs[top]


def frozen_hooks(config) -> list[str]:
  """The hooks the local replacement model holds: every attention pattern and norm factor."""
  names = hooks_lib.all_names(config)
  return [n for n in names if n.endswith(".attn.pattern") or n.endswith("norm_factor")]


def _frozen_edits(lm: LanguageModel) -> dict:
  """stop_gradient at every `frozen_hooks` site: the local replacement model."""
  return {name: jax.lax.stop_gradient for name in frozen_hooks(lm.config)}


def compute(
  lm: LanguageModel,
  dictionaries: replacement.Dictionaries,
  tokens,
  *,
  max_logits: int = 10,
  desired_probability: float = 0.95,
  batch_size: int = 32,
  skip_first: int = 0,
) -> Graph:
  """The attribution graph of `tokens` (a 1-D prompt) under `dictionaries` (per-layer
  transcoders or a CLT, as `evals.replacement` takes them). The first `skip_first` positions
  have neither features nor errors (Gemma's BOS: the attention sink; module docstring)."""
  sources, targets = replacement._plan(dictionaries)
  L = len(sources)
  if len(targets) != L:
    raise JaxsaeError(f"{L} input hooks but {len(targets)} output hooks: one of each per layer")
  tokens_1xT = jnp.asarray(np.asarray(tokens, np.int32).reshape(1, -1))
  T = tokens_1xT.shape[1]
  model = Transformer(lm.config)
  ins, outs = [s.hook for s in sources], [t.hook for t in targets]
  logits, captured = run_model(model, lm.params, tokens_1xT, capture=[*ins, *outs, "embed.tok"])
  xs = {i: captured[h][0].astype(jnp.float32) for i, h in enumerate(ins)}
  zs = {i: replacement._encode(sources[i], xs[i]) for i in range(L)}
  zs = {i: z.at[:skip_first].set(0.0) for i, z in zs.items()}
  errors = jnp.stack(
    [captured[t.hook][0].astype(jnp.float32) - replacement._decode(t, zs, xs) for t in targets]
  )  # L × T × d
  errors = errors.at[:, :skip_first].set(0.0)
  embeddings = captured["embed.tok"][0].astype(jnp.float32)

  features, activations = [], []
  for i in range(L):
    pos, idx = np.nonzero(np.asarray(zs[i]))
    features.append(np.stack([np.full_like(pos, i), pos, idx], 1))
    activations.append(np.asarray(zs[i])[pos, idx])
  features = np.concatenate(features).astype(np.int64)
  activations = np.concatenate(activations).astype(np.float32)
  logit_tokens, logit_probs = salient_logits(logits[0, -1], max_logits, desired_probability)

  rows_for = _pullbacks(lm, model, tokens_1xT, ins, outs, targets)
  n_feat, n_logits = len(features), len(logit_tokens)
  n_sources = n_feat + L * T + T
  adjacency = np.zeros((n_sources + n_logits, n_sources + n_logits), np.float32)
  writes = jnp.asarray(_feature_writes(targets, features, activations, L, errors.shape[-1]))
  positions = jnp.asarray(features[:, 1])

  def fill(first_row: int, count: int, pulled) -> None:
    block = _edges(*pulled, writes, positions, errors, embeddings)
    adjacency[first_row : first_row + count, :n_sources] = np.asarray(block)[:count]

  # Feature targets: the encoder row at the feature's layer and position.
  enc = np.stack([np.asarray(sources[l].W_enc)[:, f] for l, _, f in features]) if n_feat else None
  d_in = [int(sources[i].W_enc.shape[0]) for i in range(L)]
  for start in range(0, n_feat, batch_size):
    chunk = features[start : start + batch_size]
    cot = _feature_cotangents(chunk, enc[start : start + batch_size], T, d_in, batch_size)
    fill(start, len(chunk), rows_for.features(lm.params, cot))
  # Logit targets: the demeaned logit at the last position.
  for start in range(0, n_logits, batch_size):
    chunk = logit_tokens[start : start + batch_size]
    padded = np.zeros(batch_size, np.int32)
    padded[: len(chunk)] = chunk
    fill(n_sources + start, len(chunk), rows_for.logits(lm.params, jnp.asarray(padded)))
  return Graph(
    np.asarray(tokens_1xT[0]),
    features,
    activations,
    logit_tokens,
    logit_probs,
    adjacency,
    L,
    skip_first,
  )


def _feature_cotangents(chunk, enc_rows, T, d_in, batch_size):
  """One cotangent per target feature: its encoder row at (its layer's input hook, its
  position), zero elsewhere; padded to `batch_size`."""
  out = [np.zeros((batch_size, 1, T, d), np.float32) for d in d_in]
  for b, ((layer, pos, _), row) in enumerate(zip(chunk, enc_rows, strict=True)):
    out[layer][b, 0, pos] = row
  return [jnp.asarray(c) for c in out]


class _Pullbacks(NamedTuple):
  """Batched VJPs of the frozen forward, jitted: each maps a batch of target reads to
  (∂/∂embedding writes B×T×d, ∂/∂MLP-output writes B×L×T×d)."""

  features: Callable  # (params, [B×1×T×d_in per layer]) → gradients
  logits: Callable  # (params, B token ids) → gradients of their demeaned last-position logits


def _pullbacks(lm, model, tokens_1xT, ins, outs, targets) -> _Pullbacks:
  frozen = _frozen_edits(lm)
  blocks_only = {n: f for n, f in frozen.items() if n.startswith("blocks.")}
  T, d, V, L = tokens_1xT.shape[1], lm.config.d_model, lm.config.vocab_size, len(outs)
  zeros = (jnp.zeros((1, T, d), jnp.float32), jnp.zeros((L, 1, T, d), jnp.float32))

  def forward(params, skips, inject_emb, inject_out, reads_only: bool):
    edits = dict(blocks_only if reads_only else frozen)
    edits["embed.tok"] = lambda x: jax.lax.stop_gradient(x) + inject_emb.astype(x.dtype)
    read = {}  # The input hooks' values, for the skip paths of later output hooks.
    for i, hook in enumerate(ins):
      edits[hook] = lambda x, i=i: read.setdefault(i, x)

    def write(j, x):
      x = jax.lax.stop_gradient(x) + inject_out[j].astype(x.dtype)
      if skips[j] is None:
        return x
      linear = read[targets[j].skip_source].astype(jnp.float32) @ skips[j]
      return x + (linear - jax.lax.stop_gradient(linear)).astype(x.dtype)

    for j, hook in enumerate(outs):
      edits[hook] = lambda x, j=j: write(j, x)
    # Feature reads need no final norm or unembedding: the forward stops after the blocks.
    logits, captured = run_model(
      model, params, tokens_1xT, capture=ins, edits=edits, stop_early=reads_only
    )
    if reads_only:
      return [captured[h].astype(jnp.float32) for h in ins]
    return logits[0, -1].astype(jnp.float32)

  def pull(params, skips, reads_only: bool, cotangents):
    _, vjp = jax.vjp(lambda e, o: forward(params, skips, e, o, reads_only), *zeros)
    g_emb, g_out = jax.vmap(vjp)(cotangents)
    return g_emb[:, 0], g_out[:, :, 0]

  @jax.jit
  def features(params, skips, cot_reads):
    return pull(params, skips, True, list(cot_reads))

  @jax.jit
  def logits(params, skips, tokens_B):
    return pull(params, skips, False, jax.nn.one_hot(tokens_B, V) - 1.0 / V)

  skips = tuple(t.W_skip for t in targets)  # Arguments of the jits, not captured constants.
  return _Pullbacks(
    lambda params, cot_reads: features(params, skips, cot_reads),
    lambda params, tokens_B: logits(params, skips, tokens_B),
  )


def _feature_writes(targets, features, activations, L: int, d: int) -> np.ndarray:
  """F × L × d: each feature's write a_s·W_dec[s → j] to every target layer j (else 0)."""
  writes = np.zeros((len(features), L, d), np.float32)
  for j, target in enumerate(targets):
    for i, W in target.writers:
      mine = np.nonzero(features[:, 0] == i)[0]
      writes[mine, j] = np.asarray(W)[features[mine, 2]] * activations[mine, None]
  return writes


@jax.jit
def _edges(g_emb_BxTxD, g_out_BxLxTxD, writes_FxLxD, positions_F, errors_LxTxD, emb_TxD):
  """The B × (features + errors + tokens) row block of direct effects."""

  # Summed over target layers in a scan, so only one B × F × d gather is ever in memory (a sum
  # over a Python loop let XLA hold all L: 29 GB for Gemma 3's 18 layers and 10k features).
  def one_layer(edges_BxF, j):
    g_BxFxD = jax.lax.dynamic_index_in_dim(g_out_BxLxTxD, j, 1, keepdims=False)[:, positions_F]
    w_FxD = jax.lax.dynamic_index_in_dim(writes_FxLxD, j, 1, keepdims=False)
    return edges_BxF + jnp.einsum("bfd,fd->bf", g_BxFxD, w_FxD), None

  zeros = jnp.zeros((g_out_BxLxTxD.shape[0], writes_FxLxD.shape[0]), jnp.float32)
  feature_edges, _ = jax.lax.scan(one_layer, zeros, jnp.arange(writes_FxLxD.shape[1]))
  error_edges = jnp.einsum("bltd,ltd->blt", g_out_BxLxTxD, errors_LxTxD)
  token_edges = jnp.einsum("btd,td->bt", g_emb_BxTxD, emb_TxD)
  return jnp.concatenate([feature_edges, error_edges.reshape(len(g_emb_BxTxD), -1), token_edges], 1)
