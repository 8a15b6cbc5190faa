"""The replacement model (Ameisen et al. 2025, "Circuit Tracing", §2): every MLP's output is
replaced by a transcoder's reconstruction from that layer's MLP input, per-layer transcoders or
a cross-layer transcoder (CLT), whose layer-j output sums the features of every layer i ≤ j:

    ŷ_j = Σ_{i ≤ j} z_i W_dec[i→j] + b_dec[j] (+ x_j W_skip[j]),   z_i = act(x_i W_enc[i] + b_enc[i])

Without error terms the forward pass runs on the reconstructions (x_j is the replacement model's
own MLP input, so errors compound through later layers). With them, each layer adds the error
of the original forward, e_j = y_j − ŷ_j(x_orig), and the forward pass is the original one: the
error nodes of an attribution graph.

`evaluate` reports each layer's FVU and L0 (the dictionaries on the original model's
activations) and the CE and KL(p_original ‖ p_replacement) of the replacement model without
error terms. Like `downstream`, separator (start-of-document) positions and the first
`skip_first` positions of each window keep the model's own MLP output: dictionaries are not
trained there (Gemma's BOS has norms in the thousands).

The formulas are `jaxsae.sae.zoo.transcoders`' (which evaluates them in numpy), here in jnp so
that the edits jit and differentiate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.lm.loss import token_losses
from jaxsae.models import hooks as hooks_lib
from jaxsae.models.language_model import LanguageModel
from jaxsae.models.transformer import Transformer
from jaxsae.models.transformer import run as run_model
from jaxsae.sae.zoo.transcoders import CrossLayerTranscoder, Transcoder

Dictionaries = Sequence[Transcoder] | CrossLayerTranscoder


@dataclasses.dataclass(frozen=True)
class _Source:
  """Layer i's encoder: the hook it reads and z_i = act(x W_enc + b_enc)."""

  hook: str
  W_enc: jax.Array
  b_enc: jax.Array
  activation: str
  threshold: jax.Array | None
  k: int | None


@dataclasses.dataclass(frozen=True)
class _Target:
  """Layer j's output: the hook it writes, the sources that write it (index, W_dec[i→j]),
  b_dec[j], and W_skip[j] applied to source `skip_source`'s input."""

  hook: str
  writers: tuple[tuple[int, jax.Array], ...]
  b_dec: jax.Array
  W_skip: jax.Array | None
  skip_source: int


def _activate(pre, activation: str, threshold, k):
  if activation == "jumprelu":
    return pre * (pre > threshold)
  if activation == "relu":
    return jnp.maximum(pre, 0.0)
  if activation in ("topk", "relu_topk"):
    pre = jnp.maximum(pre, 0.0) if activation == "relu_topk" else pre
    kth = jax.lax.top_k(pre, k)[0][..., -1:]
    return pre * (pre >= kth)
  raise JaxsaeError(f"activation {activation!r} has no replacement-model form")


def _hooks(names, what: str) -> list[str]:
  if any(name is None for name in names):
    raise JaxsaeError(
      f"a dictionary has no {what} hook recorded; set input_hook/output_hook (e.g. "
      '"blocks.3.mlp.in" and "blocks.3.mlp.out") before building the replacement model'
    )
  return [hooks_lib.canonical(name) for name in names]


def _plan(dictionaries: Dictionaries) -> tuple[list[_Source], list[_Target]]:
  f32 = lambda a: None if a is None else jnp.asarray(a, jnp.float32)  # noqa: E731
  if isinstance(dictionaries, CrossLayerTranscoder):
    clt = dictionaries
    ins = _hooks(clt.input_hooks or [None] * clt.n_layers, "input")
    outs = _hooks(clt.output_hooks or [None] * clt.n_layers, "output")
    sources = [
      _Source(
        ins[i],
        f32(clt.W_enc[i]),
        f32(clt.b_enc[i]),
        clt.activation,
        None if clt.threshold is None else f32(clt.threshold[i]),
        None,
      )
      for i in range(clt.n_layers)
    ]
    targets = [
      _Target(
        outs[j],
        tuple((i, f32(clt.W_dec[i][:, j - i])) for i in range(j + 1)),
        f32(clt.b_dec[j]),
        None if clt.W_skip is None else f32(clt.W_skip[j]),
        j,
      )
      for j in range(clt.n_layers)
    ]
    return sources, targets
  ins = _hooks([tc.input_hook for tc in dictionaries], "input")
  outs = _hooks([tc.output_hook for tc in dictionaries], "output")
  if len(set(outs)) != len(outs):
    raise JaxsaeError(f"two transcoders write the same hook: {outs}")
  sources = [
    _Source(ins[i], f32(tc.W_enc), f32(tc.b_enc), tc.activation, f32(tc.threshold), tc.k)
    for i, tc in enumerate(dictionaries)
  ]
  targets = [
    _Target(outs[i], ((i, f32(tc.W_dec)),), f32(tc.b_dec), f32(tc.W_skip), i)
    for i, tc in enumerate(dictionaries)
  ]
  return sources, targets


def _encode(source: _Source, x):
  pre = x.astype(jnp.float32) @ source.W_enc + source.b_enc
  return _activate(pre, source.activation, source.threshold, source.k)


def _decode(target: _Target, z: dict, x: dict):
  y = target.b_dec
  for i, W in target.writers:
    y = y + z[i] @ W
  if target.W_skip is not None:
    y = y + x[target.skip_source].astype(jnp.float32) @ target.W_skip
  return y


def _edits(sources, targets, keep_BxT, errors=None, z_edit=None) -> dict:
  """Hook edits that run the replacement model: each source's input hook records x_i and z_i
  (leaving x_i alone; `z_edit(i, z_i)` may change z_i, an intervention); each target's output
  hook becomes ŷ_j (+ e_j) outside `keep_BxT`."""
  z, x = {}, {}
  edits = {}

  def reader(i):
    def edit(value):
      x[i], z[i] = value, _encode(sources[i], value)
      if z_edit is not None:
        z[i] = z_edit(i, z[i])
      return value

    return edit

  def writer(j):
    def edit(value):
      needed = [i for i, _ in targets[j].writers if i not in z]
      if needed:
        raise JaxsaeError(
          f"the dictionary writing {targets[j].hook} reads {sources[needed[0]].hook}, which the "
          "forward pass reaches later: an input hook must come before its output hooks"
        )
      y_hat = _decode(targets[j], z, x)
      if errors is not None:
        y_hat = y_hat + errors[j]
      return jnp.where(keep_BxT[..., None], value, y_hat.astype(value.dtype))

    return edit

  for i, source in enumerate(sources):
    edits[source.hook] = reader(i)
  for j, target in enumerate(targets):
    if target.hook in edits:
      raise JaxsaeError(f"{target.hook} is both read and written by the dictionaries")
    edits[target.hook] = writer(j)
  return edits


def _keep(tokens_BxT, separator_id: int, skip_first: int):
  position = jnp.arange(tokens_BxT.shape[1])[None, :]
  return (tokens_BxT == separator_id) | (position < skip_first)


def run_replacement(
  lm: LanguageModel,
  dictionaries: Dictionaries,
  tokens_BxT,
  *,
  error_terms: bool = False,
  skip_first: int = 0,
  z_edit=None,
  extra_edits=None,
):
  """Logits (B, T, V) of the replacement model on `tokens_BxT`; with `error_terms` each
  layer adds the original forward's reconstruction error, which gives the original logits.
  `z_edit(i, z_i)` changes layer i's features (interventions); `extra_edits` are further hook
  edits (e.g. pinned attention patterns)."""
  sources, targets = _plan(dictionaries)
  model = Transformer(lm.config)
  tokens = jnp.asarray(tokens_BxT)
  keep = _keep(tokens, lm.tokenizer.separator_id, skip_first)
  errors = None
  if error_terms:
    hooks = [s.hook for s in sources] + [t.hook for t in targets]
    _, captured = run_model(model, lm.params, tokens, capture=hooks)
    xs = {i: captured[s.hook] for i, s in enumerate(sources)}
    zs = {i: _encode(s, xs[i]) for i, s in enumerate(sources)}
    errors = {
      j: captured[t.hook].astype(jnp.float32) - _decode(t, zs, xs) for j, t in enumerate(targets)
    }
  edits = {**(extra_edits or {}), **_edits(sources, targets, keep, errors, z_edit)}
  logits, _ = run_model(model, lm.params, tokens, edits=edits)
  return logits


@dataclasses.dataclass
class ReplacementReport:
  """Per-layer FVU and L0 on the original activations; CE of the original and of the
  replacement model (no error terms), and mean KL(p_original ‖ p_replacement), in nats."""

  layers: list[dict]
  ce_original: float
  ce_replacement: float
  kl: float

  @property
  def delta_ce(self) -> float:
    return self.ce_replacement - self.ce_original

  def rows(self) -> list[dict]:
    summary = {"ce_original": self.ce_original, "ce_replacement": self.ce_replacement}
    return [{**layer, **summary, "delta_ce": self.delta_ce, "kl": self.kl} for layer in self.layers]


def evaluate(
  lm: LanguageModel,
  dictionaries: Dictionaries,
  windows_NxT1: np.ndarray,
  *,
  skip_first: int = 0,
  batch_size: int = 8,
) -> ReplacementReport:
  """The replacement model's report on token windows (inputs and next-token targets)."""
  sources, targets = _plan(dictionaries)
  model = Transformer(lm.config)
  separator = lm.tokenizer.separator_id
  hooks = [s.hook for s in sources] + [t.hook for t in targets]

  def sums(params, tokens_BxT1):
    inputs, next_tokens = tokens_BxT1[:, :-1], tokens_BxT1[:, 1:]
    keep = _keep(inputs, separator, skip_first)
    logits, captured = run_model(model, params, inputs, capture=hooks)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    xs = {i: captured[s.hook] for i, s in enumerate(sources)}
    zs = {i: _encode(s, xs[i]) for i, s in enumerate(sources)}
    counted = (~keep).astype(jnp.float32)[..., None]
    layer_sums = []
    for t in targets:
      y = captured[t.hook].astype(jnp.float32)
      err = ((y - _decode(t, zs, xs)) ** 2 * counted).sum()
      layer_sums.append((err, (y * counted).sum((0, 1)), (y**2 * counted).sum()))
    l0 = [((zs[i] != 0) * counted).sum() for i in range(len(sources))]
    repl_logits, _ = run_model(model, params, inputs, edits=_edits(sources, targets, keep))
    repl_logp = jax.nn.log_softmax(repl_logits.astype(jnp.float32))
    kl = jnp.sum(jnp.exp(logp) * (logp - repl_logp))
    ce = jnp.sum(token_losses(logits, next_tokens))
    repl_ce = jnp.sum(token_losses(repl_logits, next_tokens))
    return ce, repl_ce, kl, counted.sum(), layer_sums, l0

  fn = jax.jit(sums)
  totals = None
  for start in range(0, len(windows_NxT1), batch_size):
    batch = fn(lm.params, jnp.asarray(windows_NxT1[start : start + batch_size]))
    batch = jax.tree.map(lambda a: np.asarray(a, np.float64), batch)
    totals = batch if totals is None else jax.tree.map(np.add, totals, batch)
  ce, repl_ce, kl, n, layer_sums, l0 = totals
  predictions = len(windows_NxT1) * (windows_NxT1.shape[1] - 1)
  layers = []
  for j, (err, sum_y, sum_sq_y) in enumerate(layer_sums):
    variance = sum_sq_y - (sum_y**2).sum() / n  # Σ‖y − ȳ‖² over the counted positions.
    fvu, mean_l0 = float(err / variance), float(l0[j] / n)  # One source per target layer.
    layers.append({"layer": j, "hook": targets[j].hook, "fvu": fvu, "l0": mean_l0})
  return ReplacementReport(layers, ce / predictions, repl_ce / predictions, kl / predictions)
