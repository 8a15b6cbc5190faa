"""Probe loss (Gao et al. 2024, the TopK paper): how well single latents track known features.

For each binary task t and every latent m, fit a 1-D logistic probe by Newton's method

    p(y=1 | z) = σ(a·x + b),   x = (z_m − μ_m) / s_m        (μ, s: latent m's train mean, std)
    minimize   (1/N) Σ_n CE(y_n, p_n) + (λ/2)·a²             (CE in nats; λ small, so separable
                                                              data still has a finite optimum)

pick the latent with the lowest TRAIN cross-entropy, and report its cross-entropy on held-out
tokens. The probe loss is the mean held-out cross-entropy over tasks; the prior (the train base
rate as a constant prediction, scored on the held-out labels) is what a useless latent gets.

Each Newton step needs, per (task, latent), the sums over tokens of w·{1, x, x²} and
(p − y)·{1, x} with w = p(1 − p). Tokens where a latent is exactly zero share one x, so their
share of the sums comes in closed form from counts; only nonzero codes are visited, in rows of
one latent each, so a step costs O(T × nonzeros), not O(T × N × M). Dense inputs (a model's
neuron basis) take the same path with every entry nonzero. A step that raises the penalized
loss is halved back toward the last accepted point (a backtracking line search per probe).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError

_TASKS_PER_WORD = 32  # labels travel as one bit per task in a uint32 per code
_ROW_MULTIPLE = 256  # rows are padded to a multiple of this, so similar inputs share a compile
_PRIOR_CLIP = 1e-6
# A step that raises the loss by less than this fraction is float32 noise, not a worse fit.
_LOSS_NOISE = 1e-6
_CONVERGED = 1e-8  # stop once every probe's Newton decrement (≈ 2 × loss left) is below this


@dataclasses.dataclass(frozen=True)
class ProbeReport:
  """Per task: the best latent by train cross-entropy and its held-out cross-entropy (nats).

  Tasks whose train labels are all 0 or all 1 cannot be probed: their best_latent is -1 and
  their train and test cross-entropies are nan; they are left out of `probe_loss`.
  """

  tasks: tuple[str, ...]
  best_latent: np.ndarray  # (T,) int
  train_ce: np.ndarray  # (T,)
  test_ce: np.ndarray  # (T,)
  prior_ce: np.ndarray  # (T,) held-out cross-entropy of the train base rate
  positive_rate: np.ndarray  # (T,) train base rate

  @property
  def fitted(self) -> np.ndarray:
    """(T,) bool: the tasks that were probed (both labels occur in the train set)."""
    return self.best_latent >= 0

  @property
  def probe_loss(self) -> float:
    """Mean held-out cross-entropy of the best latent's probe over the probed tasks."""
    return float(np.mean(self.test_ce[self.fitted])) if self.fitted.any() else float("nan")

  @property
  def prior_loss(self) -> float:
    """The same mean for the constant base-rate predictor: the loss of a useless latent."""
    return float(np.mean(self.prior_ce[self.fitted])) if self.fitted.any() else float("nan")

  def rows(self) -> list[dict]:
    """One dict per task, for a CSV or markdown table (see `jaxsae.tables`)."""
    return [
      {
        "task": task,
        "positive_rate": float(self.positive_rate[i]),
        "best_latent": int(self.best_latent[i]),
        "train_ce": float(self.train_ce[i]),
        "test_ce": float(self.test_ce[i]),
        "prior_ce": float(self.prior_ce[i]),
      }
      for i, task in enumerate(self.tasks)
    ]


def fit_probes(
  codes_train_NxM,
  labels_train_NxT,
  codes_test_PxM,
  labels_test_PxT,
  tasks: Sequence[str],
  *,
  l2: float = 1e-4,
  newton_steps: int = 12,
) -> ProbeReport:
  """Fit a 1-D logistic probe on every latent for every task; see the module docstring.

  codes: SAE latents (or any features, e.g. a model's activations) per token; labels: bool or 0/1
  per token and task. `l2` is λ on the standardized slope; `newton_steps` bounds the loss
  evaluations (the first is at the prior, a = 0; the loop ends early once all probes converge).
  """
  tasks = tuple(tasks)
  z_train = _codes(codes_train_NxM, "codes_train_NxM")
  z_test = _codes(codes_test_PxM, "codes_test_PxM")
  y_train = _labels(labels_train_NxT, "labels_train_NxT", z_train, "codes_train_NxM", tasks)
  y_test = _labels(labels_test_PxT, "labels_test_PxT", z_test, "codes_test_PxM", tasks)
  if z_train.shape[1] != z_test.shape[1]:
    raise JaxsaeError(
      f"codes_train_NxM has {z_train.shape[1]} latents but codes_test_PxM has "
      f"{z_test.shape[1]}; encode both splits with the same SAE"
    )
  if len(z_train) == 0 or len(z_test) == 0:
    raise JaxsaeError("fit_probes needs at least one train and one test token; pass more tokens")
  if not (l2 > 0 and newton_steps >= 1):
    raise JaxsaeError(f"need l2 > 0 and newton_steps ≥ 1, got l2={l2}, newton_steps={newton_steps}")

  n = len(z_train)
  positives = y_train.sum(0)
  rate = positives / n
  fitted = (positives > 0) & (positives < n)
  clipped = np.clip(rate, _PRIOR_CLIP, 1 - _PRIOR_CLIP)
  test_rate = y_test.mean(0)
  prior_ce = -(test_rate * np.log(clipped) + (1 - test_rate) * np.log1p(-clipped))

  best = np.full(len(tasks), -1)
  train_ce = np.full(len(tasks), np.nan)
  test_ce = np.full(len(tasks), np.nan)
  fit_tasks = np.flatnonzero(fitted)
  if len(fit_tasks):
    codes = _SparseCodes.build(z_train)
    for lo in range(0, len(fit_tasks), _TASKS_PER_WORD):
      group = fit_tasks[lo : lo + _TASKS_PER_WORD]
      a_GxM, b_GxM, ce_GxM = codes.fit(y_train[:, group], l2, newton_steps)
      m = np.argmin(ce_GxM, axis=1)
      rows = np.arange(len(group))
      best[group], train_ce[group] = m, ce_GxM[rows, m]
      x_PxG = (z_test[:, m].astype(np.float64) - codes.mean_M[m]) * codes.inv_std_M[m]
      logit_PxG = a_GxM[rows, m] * x_PxG + b_GxM[rows, m]
      y = y_test[:, group]
      test_ce[group] = np.mean(np.logaddexp(0, logit_PxG) - y * logit_PxG, axis=0)
  return ProbeReport(tasks, best, train_ce, test_ce, prior_ce, rate)


def _codes(array, name: str) -> np.ndarray:
  codes = np.asarray(array)
  if codes.ndim != 2 or not (np.issubdtype(codes.dtype, np.number) or codes.dtype == bool):
    raise JaxsaeError(
      f"{name} must be a 2-D numeric array (tokens, latents), got {codes.dtype} of shape "
      f"{codes.shape}; flatten batch and sequence axes first: codes.reshape(-1, codes.shape[-1])"
    )
  codes = codes.astype(np.float32, copy=False)
  bad = ~np.isfinite(codes)
  if bad.any():
    token, latent = np.argwhere(bad)[0]
    raise JaxsaeError(
      f"{name} holds {int(bad.sum())} NaN or infinite values (first at token {token}, latent "
      f"{latent}); fix the SAE or activations that produced them (e.g. encode in float32), or "
      "drop those tokens from codes and labels alike"
    )
  return codes


def _labels(array, name: str, codes: np.ndarray, codes_name: str, tasks) -> np.ndarray:
  labels = np.asarray(array)
  if labels.ndim != 2 or labels.shape[1] != len(tasks):
    raise JaxsaeError(
      f"{name} must be (tokens, tasks) with one column per task ({len(tasks)} tasks), got "
      f"shape {labels.shape}; pass labels[valid] alongside codes[valid]"
    )
  if len(labels) != len(codes):
    raise JaxsaeError(
      f"{name} has {len(labels)} tokens but {codes_name} has {len(codes)}; pass the labels of "
      "exactly the tokens that were encoded (e.g. both indexed with the same valid mask)"
    )
  if labels.dtype != bool and not np.isin(labels, (0, 1)).all():
    raise JaxsaeError(f"{name} must hold booleans or 0/1, got values {np.unique(labels)[:5]}")
  return labels.astype(bool)


@dataclasses.dataclass(frozen=True)
class _SparseCodes:
  """Train codes standardized per latent, their nonzeros laid out in rows of one latent each.

  Stored slot-major: x_WxR, mask_WxR, token_WxR give slot w of row r's standardized nonzero
  value, whether the slot holds one, and its token (to look up labels); row_latent_R is each
  row's latent; x0_M the standardized value of a zero; zeros_M how many tokens a latent is zero
  on.
  """

  n: int
  mean_M: np.ndarray
  inv_std_M: np.ndarray
  x_WxR: np.ndarray
  mask_WxR: np.ndarray
  token_WxR: np.ndarray
  row_latent_R: np.ndarray
  x0_M: np.ndarray
  zeros_M: np.ndarray

  @classmethod
  def build(cls, z_NxM: np.ndarray) -> _SparseCodes:
    n, m_latents = z_NxM.shape
    flat_K = np.flatnonzero(z_NxM)
    token_K, latent_K = np.divmod(flat_K, m_latents)
    # Sorted by latent, then token; a stable sort of 16-bit keys is a radix sort.
    key_K = latent_K.astype(np.uint16) if m_latents <= 1 << 16 else latent_K
    order_K = np.argsort(key_K, kind="stable")
    token_K, latent_K = token_K[order_K], latent_K[order_K]
    value_K = z_NxM.reshape(-1)[flat_K[order_K]].astype(np.float64)
    count_M = np.bincount(latent_K, minlength=m_latents)
    mean_M = np.bincount(latent_K, value_K, minlength=m_latents) / n
    var_M = np.bincount(latent_K, value_K**2, minlength=m_latents) / n - mean_M**2
    # A latent constant on the train set (never fires, or always the same) gets x ≡ 0: its
    # probe can only learn the base rate, which is the prior.
    live = var_M > 1e-12 * (mean_M**2 + 1e-30)
    inv_std_M = np.where(live, 1 / np.sqrt(np.where(live, var_M, 1)), 0.0)
    # Rows of `width` slots, each holding nonzeros of one latent: about half a latent's mean
    # count, so padding stays small and each Newton step loops over few slots.
    width = int(np.clip(2 ** np.round(np.log2(max(len(value_K) / m_latents, 1) / 2)), 8, 1024))
    rows_M = -(-count_M // width)
    rows = int(rows_M.sum())
    padded = max(-(-rows // _ROW_MULTIPLE), 1) * _ROW_MULTIPLE
    rank_K = np.arange(len(value_K)) - np.repeat(np.cumsum(count_M) - count_M, count_M)
    row_K = np.repeat(np.cumsum(rows_M) - rows_M, count_M) + rank_K // width
    slot_K = rank_K % width
    x_WxR = np.zeros((width, padded), np.float32)
    x_WxR[slot_K, row_K] = (value_K - mean_M[latent_K]) * inv_std_M[latent_K]
    mask_WxR = np.zeros((width, padded), bool)
    mask_WxR[slot_K, row_K] = True
    token_WxR = np.zeros((width, padded), np.int32)
    token_WxR[slot_K, row_K] = token_K
    row_latent_R = np.zeros(padded, np.int32)
    row_latent_R[:rows] = np.repeat(np.arange(m_latents), rows_M)
    return cls(
      n=n,
      mean_M=mean_M,
      inv_std_M=inv_std_M,
      x_WxR=x_WxR,
      mask_WxR=mask_WxR,
      token_WxR=token_WxR,
      row_latent_R=row_latent_R,
      x0_M=(-mean_M * inv_std_M).astype(np.float32),
      zeros_M=(n - count_M).astype(np.float32),
    )

  def fit(self, y_NxG: np.ndarray, l2: float, steps: int):
    """(a, b, train CE) as float64 (G, M) arrays for up to 32 tasks at once."""
    g = y_NxG.shape[1]
    bits_N = (y_NxG.astype(np.uint32) << np.arange(g, dtype=np.uint32)).sum(1, dtype=np.uint32)
    positives_G = y_NxG.sum(0)
    rate_G = positives_G / self.n
    out = _newton(
      jnp.asarray(self.x_WxR),
      jnp.asarray(self.mask_WxR),
      jnp.asarray(bits_N[self.token_WxR]),
      jnp.asarray(self.row_latent_R),
      jnp.asarray(self.x0_M),
      jnp.asarray(self.zeros_M),
      jnp.asarray(positives_G, jnp.float32),
      jnp.asarray(np.log(rate_G / (1 - rate_G)), jnp.float32),
      jnp.float32(l2),
      n=self.n,
      steps=steps,
    )
    return tuple(np.asarray(v, np.float64) for v in out)


@functools.partial(jax.jit, static_argnames=("n", "steps"))
def _newton(
  x_WxR, mask_WxR, bits_WxR, row_latent_R, x0_M, zeros_M, pos_G, logit_G, l2, *, n, steps
):
  """Safeguarded Newton on (a, b) for every (task, latent) pair; returns (a, b, CE) as (G, M).

  Sums over a row's slots run as a loop over slots of elementwise (G, R) updates: XLA on CPU
  fuses that into one pass per slot, where (G, R, W) reductions sharing exp would be
  materialized several times over.
  """
  g, m_latents = pos_G.shape[0], x0_M.shape[0]
  task_bit_Gx1 = jnp.arange(g, dtype=jnp.uint32)[:, None]
  mask_WxR = mask_WxR.astype(jnp.float32)

  def labels(i):
    return ((bits_WxR[i] >> task_bit_Gx1) & 1).astype(jnp.float32)  # (G, R)

  def per_latent(sums_KxGxR):  # rows → latents (rows are sorted by latent)
    k = sums_KxGxR.shape[0]
    out = jax.ops.segment_sum(
      sums_KxGxR.reshape(k * g, -1).T, row_latent_R, m_latents, indices_are_sorted=True
    )
    return out.T.reshape(k, g, m_latents)

  def count_positives(i, acc_GxR):
    return acc_GxR + labels(i) * mask_WxR[i]

  zero_GxR = jnp.zeros((g, x_WxR.shape[1]), jnp.float32)
  pos_nz_GxR = jax.lax.fori_loop(0, x_WxR.shape[0], count_positives, zero_GxR)
  pos0_GxM = pos_G[:, None] - per_latent(pos_nz_GxR[None])[0]  # positives among the zeros

  def sums(a_GxM, b_GxM):
    """Σ over train tokens of w, w·x, w·x², (p − y), (p − y)·x and CE, each (G, M), over n."""
    a_GxR, b_GxR = a_GxM[:, row_latent_R], b_GxM[:, row_latent_R]

    def slot(i, acc):
      *sums, ce_sum, ce_carry = acc
      x, mask, y = x_WxR[i], mask_WxR[i], labels(i)
      s = a_GxR * x + b_GxR
      e = jnp.exp(-jnp.abs(s))
      inv = 1 / (1 + e)
      p = jnp.where(s >= 0, inv, e * inv)
      w, r = e * inv * inv * mask, (p - y) * mask
      ce = (jnp.maximum(s - 2 * y * s, 0) + jnp.log1p(e)) * mask  # softplus(±s)
      sums = [u + v for u, v in zip(sums, (w, w * x, w * x * x, r, r * x), strict=True)]
      # Kahan sum for the loss that accepts or rejects steps: a plain float32 running sum of
      # near-equal terms drifts by ~1e-5 of the total, more than a late Newton step gains.
      ce = ce - ce_carry
      total = ce_sum + ce
      return *sums, total, (total - ce_sum) - ce

    per_row = jax.lax.fori_loop(0, x_WxR.shape[0], slot, (zero_GxR,) * 7, unroll=4)[:6]
    nz = per_latent(jnp.stack(per_row))
    s0 = a_GxM * x0_M + b_GxM  # every zero of a latent shares this logit
    p0 = jax.nn.sigmoid(s0)
    w0 = zeros_M * p0 * (1 - p0)
    r0 = zeros_M * p0 - pos0_GxM
    ce0 = pos0_GxM * jax.nn.softplus(-s0) + (zeros_M - pos0_GxM) * jax.nn.softplus(s0)
    zero = jnp.stack([w0, w0 * x0_M, w0 * x0_M**2, r0, r0 * x0_M, ce0])
    return (nz + zero) / n

  def step(carry):
    i, _, a, b, a_ok, b_ok, loss_ok, ce_ok = carry
    w, wx, wxx, r, rx, ce = sums(a, b)
    loss = ce + 0.5 * l2 * a * a
    accept = loss <= loss_ok + _LOSS_NOISE * jnp.abs(loss_ok)
    a_ok, b_ok = jnp.where(accept, a, a_ok), jnp.where(accept, b, b_ok)
    loss_ok, ce_ok = jnp.where(accept, loss, loss_ok), jnp.where(accept, ce, ce_ok)
    # Newton step on (a, b) from an accepted point; else halve back toward the accepted one.
    ga, gb = rx + l2 * a, r
    haa, hab, hbb = wxx + l2, wx, w + 1e-9
    det = haa * hbb - hab * hab
    da = jnp.clip((hbb * ga - hab * gb) / det, -20.0, 20.0)
    db = jnp.clip((haa * gb - hab * ga) / det, -20.0, 20.0)
    # The Newton decrement g·H⁻¹g is twice the loss a full step could still gain.
    converged = jnp.all(accept & (ga * da + gb * db < _CONVERGED))
    a = jnp.where(accept, a - da, 0.5 * (a + a_ok))
    b = jnp.where(accept, b - db, 0.5 * (b + b_ok))
    return i + 1, converged, a, b, a_ok, b_ok, loss_ok, ce_ok

  def keep_going(carry):
    return (carry[0] < steps) & ~carry[1]

  a0 = jnp.zeros((g, m_latents), jnp.float32)
  b0 = jnp.broadcast_to(logit_G[:, None], (g, m_latents))
  inf = jnp.full((g, m_latents), jnp.inf, jnp.float32)
  start = (jnp.int32(0), jnp.bool_(False), a0, b0, a0, b0, inf, inf)
  *_, a, b, _, ce = jax.lax.while_loop(keep_going, step, start)
  return a, b, ce
