"""Steering a dense model through a bridge from a weight-sparse one (Gao et al. 2025,
§bridges).

Edit one interpretable channel c of the sparse model's residual at a
site, h_s → h_s′, and add Dec(h_s′) − Dec(h_s) to the dense model's residual there; the dense
model's output should change as the sparse circuit says (on `closing_quote`, the quote type
flips). `steer` edits the last prompt token only (the scored position; in a causal model the
logits at earlier positions cannot change) and `steering_report` compares the channel
`find_channel` picks against random channels edited by the same amount.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.models.config import TransformerConfig
from jaxsae.models.transformer import Transformer, run
from jaxsae.sparse import tasks as tasks_lib
from jaxsae.sparse.bridges.config import check_sites
from jaxsae.sparse.bridges.weights import Bridges, check_pair, decode


def _check_prompts(lm, tokens, last) -> tuple[np.ndarray, np.ndarray]:
  tokens = np.asarray(tokens, np.int32)
  tokens = tokens[None] if tokens.ndim == 1 else tokens
  last = np.broadcast_to(np.asarray(last, np.int32).reshape(-1), (len(tokens),)).copy()
  if tokens.ndim != 2 or tokens.shape[1] > lm.config.max_len:
    raise JaxsaeError(
      f"prompts of shape {tokens.shape}: pass (N, T) token ids with T <= {lm.config.max_len}"
    )
  if np.any(last < 0) or np.any(last >= tokens.shape[1]):
    raise JaxsaeError(f"last positions must be in [0, {tokens.shape[1]}); got {last}")
  return tokens, last


def _last_pass(lm, tokens_NxT, last_N, sites, batch_size: int = 64):
  """(logits (N, V), {site: (N, d_model)}) at each prompt's position `last`."""
  tokens, last = _check_prompts(lm, tokens_NxT, last_N)
  batch_size = min(batch_size, len(tokens))  # Rows run in fixed chunks: one compiled shape.
  logits, out = [], {s: [] for s in sites}
  for n, chunk, chunk_last in tasks_lib.padded_batches(batch_size, tokens, last):
    all_logits, captured = lm.run(chunk, capture=tuple(sites))
    rows, at = np.arange(n), chunk_last[:n]
    logits.append(np.asarray(all_logits)[rows, at])
    for s in sites:
      out[s].append(np.asarray(captured[s])[rows, at])
  return np.concatenate(logits), {s: np.concatenate(v) for s, v in out.items()}


def last_residuals(
  lm, tokens_NxT, last_N, sites: Sequence[str], batch_size: int = 64
) -> dict[str, np.ndarray]:
  """{site: (N, d_model)} the model's activation at each prompt's position `last`."""
  return _last_pass(lm, tokens_NxT, last_N, sites, batch_size)[1]


@dataclasses.dataclass(frozen=True)
class ChannelStats:
  """Per channel of one site, over a task's A and B prompts at their last token: the class means,
  the pooled std and the separation score |mean_A − mean_B| / pooled std."""

  site: str
  mean_a: np.ndarray
  mean_b: np.ndarray
  pooled_std: np.ndarray
  score: np.ndarray

  @property
  def channel(self) -> int:
    return int(np.argmax(self.score))


def _check_task(lm, task: tasks_lib.Task, width: int | None = None) -> tasks_lib.PairBatch:
  if lm.tokenizer.spec() != task.tokenizer_spec:
    raise JaxsaeError(
      f"task {task.name} was built with tokenizer {task.tokenizer_spec!r} but the model uses "
      f"{lm.tokenizer.spec()!r}; rebuild the task with the model's tokenizer"
    )
  if len(task) < 2:
    raise JaxsaeError(f"task {task.name} has {len(task)} pairs; build it with n_pairs >= 2")
  if task.max_prompt_len() > lm.config.max_len:
    raise JaxsaeError(
      f"task {task.name} has prompts of {task.max_prompt_len()} tokens; the model reads at most "
      f"{lm.config.max_len}: rebuild the task with max_len={lm.config.max_len}"
    )
  return task.batch(width)


def _pass_ab(lm, batch: tasks_lib.PairBatch, sites, batch_size: int = 64):
  """`_last_pass` of the A and of the B prompts, in one pass over both."""
  tokens = np.concatenate([batch.tokens_a, batch.tokens_b])
  last = np.concatenate([batch.last_a, batch.last_b])
  logits, h = _last_pass(lm, tokens, last, sites, batch_size)
  n = len(batch.tokens_a)
  a = (logits[:n], {s: v[:n] for s, v in h.items()})
  return a, (logits[n:], {s: v[n:] for s, v in h.items()})


def _stats(site: str, a: np.ndarray, b: np.ndarray) -> ChannelStats:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  pooled = np.sqrt(
    ((len(a) - 1) * a.var(0, ddof=1) + (len(b) - 1) * b.var(0, ddof=1)) / (len(a) + len(b) - 2)
  )
  score = np.abs(a.mean(0) - b.mean(0)) / np.maximum(pooled, 1e-6)
  return ChannelStats(site, a.mean(0), b.mean(0), pooled, score)


def channel_stats(
  sparse_lm,
  task: tasks_lib.Task,
  sites: Sequence[str],
  batch_size: int = 64,
  width: int | None = None,
) -> dict[str, ChannelStats]:
  """`ChannelStats` of the sparse model's residual at each of `sites` (one forward pass), the
  prompts right-padded to `width` tokens (default: the longest)."""
  check_sites(sites, sparse_lm.config.n_layers)
  batch = _check_task(sparse_lm, task, width)
  (_, ha), (_, hb) = _pass_ab(sparse_lm, batch, sites, batch_size)
  return {s: _stats(s, ha[s], hb[s]) for s in sites}


def find_channel(sparse_lm, task: tasks_lib.Task, site: str) -> int:
  """The channel of the sparse model's residual at `site` that best separates the task's A and
  B prompts at their last token: argmax |mean_A − mean_B| / pooled std."""
  return channel_stats(sparse_lm, task, [site])[site].channel


@functools.lru_cache(maxsize=32)
def _delta_run(config: TransformerConfig, site: str):
  """jit(params, tokens (B,T), last (B,), delta (B,D)) -> logits with delta added at `site`,
  position last of each row."""
  model = Transformer(config)

  def fn(params, tokens, last, delta):
    def edit(x):
      return x.at[jnp.arange(x.shape[0]), last].add(delta.astype(x.dtype))

    return run(model, params, tokens, edits={site: edit})[0]

  return jax.jit(fn)


def _steered_logits(
  dense_lm, bridges, tokens, last, site, h_last, channel, value, batch_size=64, last_only=False
) -> np.ndarray:
  """Dense logits with Dec(h′) − Dec(h) added at `site`, position `last`, where h′ is h_last
  (N, d_sparse) with `channel` set to `value` (a scalar or (N,))."""
  h = np.asarray(h_last, np.float32)
  h_new = h.copy()
  h_new[:, channel] = np.broadcast_to(np.asarray(value, np.float32), (len(h),))
  delta = np.asarray(decode(bridges, site, jnp.asarray(h_new)) - decode(bridges, site, h))
  return _delta_logits(dense_lm, site, tokens, last, delta, batch_size, last_only)


def _delta_logits(lm, site, tokens, last, delta_NxD, batch_size=64, last_only=False):
  """The model's logits with delta_NxD added to its activation at `site`, position `last`."""
  fn = _delta_run(lm.config, site)
  batch_size = min(batch_size, len(tokens))
  out = []
  delta = np.asarray(delta_NxD, np.float32)
  for n, chunk, chunk_last, chunk_delta in tasks_lib.padded_batches(
    batch_size, tokens, last, delta
  ):
    logits = np.asarray(fn(lm.params, chunk, chunk_last, chunk_delta))[:n]
    out.append(logits[np.arange(n), chunk_last[:n]] if last_only else logits)
  return np.concatenate(out)


def steer(
  dense_lm,
  sparse_lm,
  bridges: Bridges,
  tokens_NxT,
  last_N,
  site: str,
  channel: int,
  value,
) -> np.ndarray:
  """The dense model's logits (N, T, V) after adding Dec(h_s′) − Dec(h_s) to its residual at
  `site`, where h_s is the sparse model's residual there and h_s′ the same with `channel` set to
  `value` (a scalar or one per prompt) at each prompt's position `last` only. Only the logits
  at and after `last` can change (the decoder is affine, so the delta is
  (value − h_s[c]) · W_dec[c])."""
  check_pair(bridges, dense_lm, sparse_lm)
  bridges.site(site)
  if not 0 <= int(channel) < bridges.d_sparse:
    raise JaxsaeError(f"channel {channel} must be in [0, d_sparse={bridges.d_sparse})")
  tokens, last = _check_prompts(dense_lm, tokens_NxT, last_N)
  h = last_residuals(sparse_lm, tokens, last, [site])[site]
  return _steered_logits(dense_lm, bridges, tokens, last, site, h, int(channel), value)


def _flip_summary(before_a, after_a, before_b, after_b) -> dict[str, float]:
  """Logit differences d = ℓ_tok − ℓ_alt before/after, flip rates (the sign of d changes) and the
  mean shift toward the other class (−Δd on A prompts, +Δd on B prompts)."""
  flip_a, flip_b = (before_a > 0) != (after_a > 0), (before_b > 0) != (after_b > 0)
  return {
    "diff_a_before": float(before_a.mean()),
    "diff_a_after": float(after_a.mean()),
    "diff_b_before": float(before_b.mean()),
    "diff_b_after": float(after_b.mean()),
    "flip_a": float(flip_a.mean()),
    "flip_b": float(flip_b.mean()),
    "flip_rate": float(np.concatenate([flip_a, flip_b]).mean()),
    "shift": float(np.concatenate([before_a - after_a, after_b - before_b]).mean()),
  }


def steering_report(
  dense_lm,
  sparse_lm,
  bridges: Bridges,
  choose_task: tasks_lib.Task,
  measure_task: tasks_lib.Task,
  sites: Sequence[str] | None = None,
  n_controls: int = 1,
  seed: int = 0,
) -> dict[str, Any]:
  """Steer the dense model through the sparse model's most task-separating channel, per site.

  At each site (default: every bridge site) the channel c = `find_channel` on `choose_task`;
  on `measure_task`, A prompts get c set to the B-class mean (from `choose_task`) and B prompts
  to the A-class mean, at the last token, and the dense model is steered by the decoded
  difference (`steer`). Controls: `n_controls` random channels c′ ≠ c, each edited by the same
  per-prompt amount (h[c′] += mean_other[c] − h[c]); their measures are averaged.

  Returns {"task", "n_pairs", "baseline" (dense accuracy and mean logit differences), "sites":
  one row per site (channel, score, class means, `_flip_summary` of the edit and "control_"*
  of the controls), "best_site" (highest flip rate), "sparse_reference" (the same edit at the
  best site made in the sparse model itself, measured on the sparse model's logits), "prompts"
  (per-prompt logit differences at the best site)}. Logit difference d = ℓ_tok − ℓ_alt; a flip
  is a change of sign of d.
  """
  check_pair(bridges, dense_lm, sparse_lm)
  sites = list(bridges.sites if sites is None else check_sites(sites, dense_lm.config.n_layers))
  for s in sites:
    bridges.site(s)
  if choose_task.name != measure_task.name:
    raise JaxsaeError(
      f"choose_task is {choose_task.name} but measure_task is {measure_task.name}; pass the same "
      "task built from two corpus splits"
    )
  if bridges.d_sparse < 2:
    raise JaxsaeError("steering controls need a sparse model of d_model >= 2")
  # One padded width for both tasks: the same compiled shapes serve both.
  width = max(choose_task.max_prompt_len(), measure_task.max_prompt_len())
  _check_task(sparse_lm, choose_task)
  batch = _check_task(sparse_lm, measure_task, width)
  stats = channel_stats(sparse_lm, choose_task, sites, width=width)
  _check_prompts(dense_lm, batch.tokens_a, batch.last_a)
  (sparse_la, ha), (sparse_lb, hb) = _pass_ab(sparse_lm, batch, sites)
  tok, alt = measure_task.tok, measure_task.alt

  def diff(logits):
    return logits[:, tok] - logits[:, alt]

  before_a = diff(_last_pass(dense_lm, batch.tokens_a, batch.last_a, ())[0])
  before_b = diff(_last_pass(dense_lm, batch.tokens_b, batch.last_b, ())[0])
  rng = np.random.default_rng(seed)

  def steered(site, tokens, last, h, channel, value):
    logits = _steered_logits(
      dense_lm, bridges, tokens, last, site, h, channel, value, last_only=True
    )
    return diff(logits)

  rows, prompts = [], {}
  for site in sites:
    st = stats[site]
    c = st.channel
    to_b, to_a = float(st.mean_b[c]), float(st.mean_a[c])
    after_a = steered(site, batch.tokens_a, batch.last_a, ha[site], c, to_b)
    after_b = steered(site, batch.tokens_b, batch.last_b, hb[site], c, to_a)
    row = {
      "site": site,
      "channel": c,
      "score": float(st.score[c]),
      "mean_a": to_a,
      "mean_b": to_b,
      **_flip_summary(before_a, after_a, before_b, after_b),
    }
    controls, control_channels = [], []
    others = np.array([j for j in range(bridges.d_sparse) if j != c])
    for cc in rng.choice(others, size=min(n_controls, len(others)), replace=False):
      cc = int(cc)
      control_channels.append(cc)
      ctrl_a = steered(
        site, batch.tokens_a, batch.last_a, ha[site], cc, ha[site][:, cc] + to_b - ha[site][:, c]
      )
      ctrl_b = steered(
        site, batch.tokens_b, batch.last_b, hb[site], cc, hb[site][:, cc] + to_a - hb[site][:, c]
      )
      controls.append((_flip_summary(before_a, ctrl_a, before_b, ctrl_b), ctrl_a, ctrl_b))
    for key in controls[0][0]:
      row[f"control_{key}"] = float(np.mean([summary[key] for summary, _, _ in controls]))
    row["control_channels"] = control_channels
    rows.append(row)
    prompts[site] = {
      "before_a": before_a.tolist(),
      "after_a": after_a.tolist(),
      "before_b": before_b.tolist(),
      "after_b": after_b.tolist(),
      "control_after_a": controls[0][1].tolist(),
      "control_after_b": controls[0][2].tolist(),
    }
  best = max(rows, key=lambda r: (r["flip_rate"], r["shift"]))
  accuracy = float(np.concatenate([before_a > 0, before_b <= 0]).mean())

  # Reference: the same edit made inside the sparse model itself, at the best site. If the
  # sparse model flips and the dense one does not, the bridge's decoder is what falls short.
  def sparse_edit(tokens, last, h, value):
    delta = np.zeros_like(h)
    delta[:, best["channel"]] = value - h[:, best["channel"]]
    return diff(_delta_logits(sparse_lm, best["site"], tokens, last, delta, last_only=True))

  sparse_before_a, sparse_before_b = diff(sparse_la), diff(sparse_lb)
  sparse_reference = {
    "site": best["site"],
    "channel": best["channel"],
    "accuracy": float(np.concatenate([sparse_before_a > 0, sparse_before_b <= 0]).mean()),
    **_flip_summary(
      sparse_before_a,
      sparse_edit(batch.tokens_a, batch.last_a, ha[best["site"]], best["mean_b"]),
      sparse_before_b,
      sparse_edit(batch.tokens_b, batch.last_b, hb[best["site"]], best["mean_a"]),
    ),
  }
  best = best["site"]
  return {
    "task": measure_task.name,
    "tok": measure_task.tok_text,
    "alt": measure_task.alt_text,
    "n_pairs": len(measure_task),
    "n_controls": len(controls),
    "baseline": {
      "accuracy": accuracy,
      "diff_a": float(before_a.mean()),
      "diff_b": float(before_b.mean()),
    },
    "sites": rows,
    "best_site": best,
    "sparse_reference": sparse_reference,
    "prompts": {"site": best, **prompts[best]},
  }
