"""Bridges between a dense and a weight-sparse transformer (Gao et al. 2025, "Weight-sparse
transformers have interpretable circuits", §bridges).

At every residual site i (after the embedding, after each attention block and after each MLP
block: `bridge_sites`) an encoder maps the dense model's residual h_d into the sparse model's
and a decoder maps back:

    Enc_i(h_d) = AbsTopK_k(h_d W_enc + b_enc)      W_enc: d_dense x d_sparse
    Dec_i(h_s) = h_s W_dec + b_dec                  W_dec: d_sparse x d_dense

trained with the paper's loss, every coefficient 1:

    L = CE(sparse) + KL(p_d ‖ p_s)
        + Σ_i NMSE(Enc_i(h_d,i), sg(h_s,i)) + NMSE(Dec_i(h_s,i), sg(h_d,i))
        + Σ_i KL(p_d ‖ p_{d→s,i}) + KL(p_d ‖ p_{s→d,i})

p_d, p_s are the two models' next-token distributions; p_{d→s,i} runs the sparse model with its
residual at site i replaced by Enc_i(h_d,i) (the rest of its forward pass from there on), and
p_{s→d,i} runs the dense model with its residual at site i replaced by Dec_i(h_s,i).
KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), averaged over every predicted token. NMSE sums over
every token of the batch (all positions, separators included) before dividing:

    NMSE(x̂, x) = Σ_tokens ‖x̂ − x‖² / Σ_tokens ‖x‖².

Stop-gradients (sg): the encoder's target h_s is under sg (the encoder chases the sparse model,
never the reverse); the dense model is frozen, so everything of it (h_d, p_d) is too. The
decoder's input h_s and the sparse model's pass in the hybrids carry gradient, so
`bridge_losses` can also train the sparse model's parameters (`sparse_params`).

The paper trains the sparse model jointly with its bridges (and the dense model fixed). This
implementation trains the bridges between two *pretrained* models: both language models are
frozen and only the bridges learn (`train_bridges`), so CE(sparse) and KL(p_d ‖ p_s) are
constants; they are still reported. Training jointly would need the weight-sparse optimizer of
`jaxsae.sparse.optim`, and is left out. Also not from the paper: by default each bridge starts
as the least-squares linear map between the two residuals (`BridgeConfig.init`), so that a few
hundred CPU steps suffice.

Steering through a bridge is `jaxsae.sparse.steering`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxsae import run_log, saved
from jaxsae.errors import CheckpointError, ConfigError, JaxsaeError
from jaxsae.lm.loss import token_losses
from jaxsae.models.config import TransformerConfig
from jaxsae.models.transformer import Transformer, abs_topk, run
from jaxsae.text import pipeline

ALL_SITES = "all"
INITS = ("lstsq", "random")
TERMS = ("nmse_enc", "nmse_dec", "kl_hybrid_enc", "kl_hybrid_dec")
"""The per-site loss terms; `bridge_losses` reports each as "<term>/<site>" and summed as "<term>"."""
DEFAULT_TOPK_FRACTION = 0.25
FORMAT = "jaxsae.bridges"
FORMAT_VERSION = 1
CONFIG_FILE = "bridges.json"
WEIGHTS_FILE = "bridges.safetensors"
_SITE_RE = re.compile(r"^blocks\.(\d+)\.(resid_pre|resid_mid|resid_post)$")
_NMSE_EPS = 1e-12


def bridge_sites(n_layers: int) -> list[str]:
  """The 2L+1 residual sites in forward order: blocks.0.resid_pre (after the embedding), then
  blocks.{l}.resid_mid (after attention) and blocks.{l}.resid_post (after the MLP) per layer."""
  sites = ["blocks.0.resid_pre"]
  for layer in range(n_layers):
    sites += [f"blocks.{layer}.resid_mid", f"blocks.{layer}.resid_post"]
  return sites


def check_sites(sites: Sequence[str], n_layers: int) -> tuple[str, ...]:
  """`sites` deduplicated in forward order; JaxsaeError naming each unknown one and the fix."""
  known = bridge_sites(n_layers)
  problems = []
  for site in sites:
    if site in known:
      continue
    m = _SITE_RE.match(str(site))
    if m and m.group(2) == "resid_pre" and 0 < int(m.group(1)) <= n_layers:
      problems.append(
        f'"{site}" (the same activation as "blocks.{int(m.group(1)) - 1}.resid_post"; use that)'
      )
    else:
      problems.append(f'"{site}"')
  if problems:
    raise JaxsaeError(
      f"unknown bridge site(s) {', '.join(problems)}; a {n_layers}-layer model's bridge sites "
      f'are {known} (bridge_sites(n_layers)), or "{ALL_SITES}"'
    )
  if not sites:
    raise JaxsaeError(f'no bridge sites given; pass some of {known} or "{ALL_SITES}"')
  return tuple(s for s in known if s in set(sites))


# --------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
  """How to build and train bridges.

  sites:          "all" (every residual site, `bridge_sites`) or a tuple of site names.
  topk_fraction:  the encoder's AbsTopK keeps round(f * d_sparse) entries per token; None: the
                  sparse model's activation_topk_fraction, or 0.25 if it has none.
  steps:          Adam steps.
  batch_size:     windows per step.
  lr:             Adam learning rate (constant).
  seed:           initialisation and data order.
  init:           "lstsq": each encoder and decoder starts as the ridge least-squares linear map
                  between the two models' residuals on `init_windows` random training windows
                  (AbsTopK ignored); "random": W ~ N(0, 1/d_in), b = 0.
  init_windows:   windows for the "lstsq" fit.
  log_every:      steps between logged training records.
  """

  sites: str | tuple[str, ...] = ALL_SITES
  topk_fraction: float | None = None
  steps: int = 300
  batch_size: int = 8
  lr: float = 1e-3
  seed: int = 0
  init: str = "lstsq"
  init_windows: int = 64
  log_every: int = 10

  def __post_init__(self):
    if not isinstance(self.sites, str):
      object.__setattr__(self, "sites", tuple(self.sites))
    problems = self.problems()
    if problems:
      raise ConfigError(problems)

  def problems(self) -> list[str]:
    """Every invalid field, with its fix."""
    p = []
    if isinstance(self.sites, str):
      if self.sites != ALL_SITES:
        p.append(f'bridge.sites={self.sites!r} must be "{ALL_SITES}" or a tuple of site names')
    elif not self.sites or not all(isinstance(s, str) for s in self.sites):
      p.append(f"bridge.sites={self.sites!r} must be a non-empty tuple of site names")
    f = self.topk_fraction
    if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1):
      p.append(
        f"bridge.topk_fraction={f!r} must be in (0, 1] (1 keeps every entry), or None for the "
        "sparse model's activation_topk_fraction"
      )
    for name in ("steps", "batch_size", "init_windows", "log_every"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        p.append(f"bridge.{name}={value!r} must be a positive int")
    if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
      p.append(f"bridge.lr={self.lr!r} must be a positive number (e.g. 1e-3)")
    if isinstance(self.seed, bool) or not isinstance(self.seed, int):
      p.append(f"bridge.seed={self.seed!r} must be an int")
    if self.init not in INITS:
      p.append(f"bridge.init={self.init!r} must be one of {INITS}")
    return p

  def resolve_sites(self, n_layers: int) -> tuple[str, ...]:
    sites = bridge_sites(n_layers) if self.sites == ALL_SITES else self.sites
    return check_sites(sites, n_layers)

  def topk_count(self, sparse_config: TransformerConfig) -> int:
    """k of the encoder's AbsTopK: round(f * d_sparse), at least 1."""
    f = self.topk_fraction
    if f is None:
      f = sparse_config.activation_topk_fraction or DEFAULT_TOPK_FRACTION
    return max(1, min(sparse_config.d_model, round(f * sparse_config.d_model)))

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["sites"] = self.sites if isinstance(self.sites, str) else list(self.sites)
    return d

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> BridgeConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(
        [f"unknown bridge config key {k!r}; known: {sorted(known)}" for k in unknown]
      )
    values = dict(values)
    if isinstance(values.get("sites"), list):
      values["sites"] = tuple(values["sites"])
    return cls(**values)


# --------------------------------------------------------------------------------------------
# Parameters, encode and decode.


@struct.dataclass
class Bridges:
  """Per-site encoder and decoder weights: weights[site] = {W_enc (d_dense, d_sparse), b_enc
  (d_sparse,), W_dec (d_sparse, d_dense), b_dec (d_dense,)}. A pytree (optax trains it); the
  sites and the encoder's k are static."""

  weights: dict[str, dict[str, jax.Array]]
  sites: tuple[str, ...] = struct.field(pytree_node=False)
  k: int = struct.field(pytree_node=False)

  @property
  def d_dense(self) -> int:
    return int(self.weights[self.sites[0]]["W_enc"].shape[0])

  @property
  def d_sparse(self) -> int:
    return int(self.weights[self.sites[0]]["W_enc"].shape[1])

  def site(self, site: str) -> dict[str, jax.Array]:
    if site not in self.weights:
      raise JaxsaeError(
        f'no bridge at site "{site}"; these bridges have {list(self.sites)} (train them with '
        "that site in BridgeConfig.sites)"
      )
    return self.weights[site]


def init_bridges(
  d_dense: int, d_sparse: int, sites: Sequence[str], k: int, rng: jax.Array
) -> Bridges:
  """Random bridges: W ~ N(0, 1/d_in), zero biases."""
  if not 1 <= k <= d_sparse:
    raise JaxsaeError(f"encoder k={k} must be in [1, d_sparse={d_sparse}]")
  weights = {}
  for site, key in zip(sites, jax.random.split(rng, len(sites)), strict=True):
    k_enc, k_dec = jax.random.split(key)
    weights[site] = {
      "W_enc": jax.random.normal(k_enc, (d_dense, d_sparse)) / np.sqrt(d_dense),
      "b_enc": jnp.zeros((d_sparse,)),
      "W_dec": jax.random.normal(k_dec, (d_sparse, d_dense)) / np.sqrt(d_sparse),
      "b_dec": jnp.zeros((d_dense,)),
    }
  return Bridges(weights, tuple(sites), int(k))


def _check_width(h: jax.Array, want: int, what: str, site: str) -> None:
  if h.shape[-1] != want:
    raise JaxsaeError(
      f'{what} at "{site}" got activations of width {h.shape[-1]}, but the bridge expects '
      f"{want}; pass the {'dense' if what == 'encode' else 'sparse'} model's residual there"
    )


def encode(bridges: Bridges, site: str, h_dense: jax.Array) -> jax.Array:
  """Enc(h_d) = AbsTopK_k(h_d W_enc + b_enc): dense residual (..., d_dense) -> sparse (..., d_sparse)."""
  w = bridges.site(site)
  _check_width(h_dense, w["W_enc"].shape[0], "encode", site)
  return abs_topk(h_dense.astype(jnp.float32) @ w["W_enc"] + w["b_enc"], bridges.k)


def decode(bridges: Bridges, site: str, h_sparse: jax.Array) -> jax.Array:
  """Dec(h_s) = h_s W_dec + b_dec: sparse residual (..., d_sparse) -> dense (..., d_dense)."""
  w = bridges.site(site)
  _check_width(h_sparse, w["W_dec"].shape[0], "decode", site)
  return h_sparse.astype(jnp.float32) @ w["W_dec"] + w["b_dec"]


def _ridge(x_NxI: np.ndarray, y_NxO: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
  """(W, b) minimising ‖x W + b − y‖² + λ‖W‖², λ = ridge · mean eigenvalue of cov(x)."""
  x, y = np.asarray(x_NxI, np.float64), np.asarray(y_NxO, np.float64)
  mx, my = x.mean(0), y.mean(0)
  xc, yc = x - mx, y - my
  gram = xc.T @ xc
  lam = ridge * np.trace(gram) / gram.shape[0] + 1e-12
  w = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), xc.T @ yc)
  return w.astype(np.float32), (my - mx @ w).astype(np.float32)


def fit_linear(
  bridges: Bridges, dense_lm, sparse_lm, windows_NxT1: np.ndarray, ridge: float = 1e-4
) -> Bridges:
  """Bridges whose maps are the ridge least-squares fits h_d -> h_s (encoder, before its
  AbsTopK) and h_s -> h_d (decoder) over every token of `windows_NxT1`: a start for training."""
  inputs = np.asarray(windows_NxT1)[:, :-1]
  captured = {"dense": {s: [] for s in bridges.sites}, "sparse": {s: [] for s in bridges.sites}}
  for lo in range(0, len(inputs), 8):
    for name, lm in (("dense", dense_lm), ("sparse", sparse_lm)):
      _, cap = lm.run(inputs[lo : lo + 8], capture=bridges.sites)
      for s in bridges.sites:
        captured[name][s].append(np.asarray(cap[s]).reshape(-1, cap[s].shape[-1]))
  weights = {}
  for s in bridges.sites:
    h_d, h_s = np.concatenate(captured["dense"][s]), np.concatenate(captured["sparse"][s])
    w_enc, b_enc = _ridge(h_d, h_s, ridge)
    w_dec, b_dec = _ridge(h_s, h_d, ridge)
    weights[s] = {
      "W_enc": jnp.asarray(w_enc),
      "b_enc": jnp.asarray(b_enc),
      "W_dec": jnp.asarray(w_dec),
      "b_dec": jnp.asarray(b_dec),
    }
  return bridges.replace(weights=weights)


# --------------------------------------------------------------------------------------------
# The loss.


def nmse(x_hat: jax.Array, x: jax.Array) -> jax.Array:
  """Σ ‖x̂ − x‖² / Σ ‖x‖², both sums over every token (row) of the batch."""
  x_hat, x = x_hat.astype(jnp.float32), x.astype(jnp.float32)
  return jnp.sum(jnp.square(x_hat - x)) / jnp.maximum(jnp.sum(jnp.square(x)), _NMSE_EPS)


def kl_from(logp_p: jax.Array, logits_q: jax.Array) -> jax.Array:
  """KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), mean over tokens; p given as log-probabilities."""
  logp_q = jax.nn.log_softmax(logits_q.astype(jnp.float32), axis=-1)
  return jnp.mean(jnp.sum(jnp.exp(logp_p) * (logp_p - logp_q), axis=-1))


def _replace_with(value: jax.Array):
  return lambda x: value


def losses(
  bridges: Bridges,
  dense_params: Any,
  sparse_params: Any,
  tokens_BxT1: jax.Array,
  *,
  dense_model: Transformer,
  sparse_model: Transformer,
) -> dict[str, jax.Array]:
  """Every term of the bridge loss (module docstring) on windows of T+1 tokens: a pure function
  of the parameters (inputs are [:, :-1], CE targets [:, 1:]). See `bridge_losses`."""
  inputs, targets = tokens_BxT1[:, :-1], tokens_BxT1[:, 1:]
  sites = bridges.sites
  dense_logits, h_d = run(dense_model, dense_params, inputs, capture=sites)
  sparse_logits, h_s = run(sparse_model, sparse_params, inputs, capture=sites)
  dense_logp = jax.lax.stop_gradient(jax.nn.log_softmax(dense_logits.astype(jnp.float32), -1))
  h_d = jax.lax.stop_gradient(h_d)  # The dense model is frozen (also in the paper).
  out = {
    "ce_sparse": jnp.mean(token_losses(sparse_logits, targets)),
    "kl_dense_sparse": kl_from(dense_logp, sparse_logits),
  }
  for site in sites:
    enc = encode(bridges, site, h_d[site])
    dec = decode(bridges, site, h_s[site])
    out[f"nmse_enc/{site}"] = nmse(enc, jax.lax.stop_gradient(h_s[site]))
    out[f"nmse_dec/{site}"] = nmse(dec, h_d[site])
    # Continue each model from site i with the other's residual bridged in: the edit replaces
    # the activation there, and XLA drops the now-unused computation before it.
    hybrid_sparse, _ = run(sparse_model, sparse_params, inputs, edits={site: _replace_with(enc)})
    out[f"kl_hybrid_enc/{site}"] = kl_from(dense_logp, hybrid_sparse)
    hybrid_dense, _ = run(dense_model, dense_params, inputs, edits={site: _replace_with(dec)})
    out[f"kl_hybrid_dec/{site}"] = kl_from(dense_logp, hybrid_dense)
  for term in TERMS:
    out[term] = sum(out[f"{term}/{site}"] for site in sites)
  out["total"] = out["ce_sparse"] + out["kl_dense_sparse"] + sum(out[t] for t in TERMS)
  return out


def check_pair(bridges: Bridges | None, dense_lm, sparse_lm) -> None:
  """JaxsaeError unless the two models share vocabulary and depth, and the bridges fit them."""
  dc, sc = dense_lm.config, sparse_lm.config
  if dc.vocab_size != sc.vocab_size or dense_lm.tokenizer.spec() != sparse_lm.tokenizer.spec():
    raise JaxsaeError(
      f"the dense model (vocab {dc.vocab_size}, tokenizer {dense_lm.tokenizer.spec()!r}) and the "
      f"sparse model (vocab {sc.vocab_size}, tokenizer {sparse_lm.tokenizer.spec()!r}) must "
      "share a tokenizer: the KL terms compare their next-token distributions"
    )
  if dc.n_layers != sc.n_layers:
    raise JaxsaeError(
      f"the dense model has {dc.n_layers} layers and the sparse one {sc.n_layers}; bridges pair "
      "residual sites layer by layer, so pass two models of the same depth"
    )
  if bridges is None:
    return
  check_sites(bridges.sites, dc.n_layers)
  if (bridges.d_dense, bridges.d_sparse) != (dc.d_model, sc.d_model):
    raise JaxsaeError(
      f"the bridges map d_dense={bridges.d_dense} <-> d_sparse={bridges.d_sparse}, but the "
      f"models have d_model {dc.d_model} (dense) and {sc.d_model} (sparse); pass the models "
      "they were trained between, or train new bridges"
    )


def _check_tokens(tokens, dense_lm, sparse_lm) -> jax.Array:
  tokens = jnp.asarray(tokens, jnp.int32)
  max_len = min(dense_lm.config.max_len, sparse_lm.config.max_len)
  if tokens.ndim != 2 or not 2 <= tokens.shape[1] <= max_len + 1:
    raise JaxsaeError(
      f"tokens of shape {tuple(tokens.shape)}: pass windows (batch, T+1) with 2 <= T+1 <= "
      f"{max_len + 1} (inputs are [:, :-1], targets [:, 1:]; see jaxsae.text.pipeline)"
    )
  return tokens


@functools.lru_cache(maxsize=8)
def _jitted_losses(dense_config: TransformerConfig, sparse_config: TransformerConfig):
  return jax.jit(
    functools.partial(
      losses, dense_model=Transformer(dense_config), sparse_model=Transformer(sparse_config)
    )
  )


def bridge_losses(
  bridges: Bridges, dense_lm, sparse_lm, sparse_params: Any, tokens_BxT1
) -> dict[str, jax.Array]:
  """Every term of the bridge loss on windows `tokens_BxT1` (batch, T+1), jitted.

  Keys: ce_sparse, kl_dense_sparse, "<term>/<site>" for each term of TERMS (nmse_enc, nmse_dec,
  kl_hybrid_enc, kl_hybrid_dec) and site, "<term>" (the sum over sites) and total (the sum of
  everything, each coefficient 1). `sparse_params` None means `sparse_lm.params`.
  """
  check_pair(bridges, dense_lm, sparse_lm)
  tokens = _check_tokens(tokens_BxT1, dense_lm, sparse_lm)
  sparse_params = sparse_lm.params if sparse_params is None else sparse_params
  fn = _jitted_losses(dense_lm.config, sparse_lm.config)
  return fn(bridges, dense_lm.params, sparse_params, tokens)


def _windows_array(windows, n: int | None = None) -> np.ndarray:
  if isinstance(windows, pipeline.PackedWindows):
    count = len(windows) if n is None else min(n, len(windows))
    return np.stack([windows[i] for i in range(count)])
  arr = np.asarray(windows, np.int32)
  return arr if n is None else arr[:n]


def evaluate_bridges(
  bridges: Bridges,
  dense_lm,
  sparse_lm,
  windows,
  batch_size: int = 8,
  max_windows: int | None = None,
) -> dict[str, float]:
  """Each term of `bridge_losses`, averaged over the full batches of the first `max_windows`
  windows (a `PackedWindows` or an (N, T+1) array); the last partial batch is dropped."""
  arr = _windows_array(windows, max_windows)
  n_batches = len(arr) // batch_size
  if n_batches < 1:
    raise JaxsaeError(
      f"{len(arr)} windows make no full batch of {batch_size}; pass more windows or a smaller "
      "batch size"
    )
  totals: dict[str, float] = {}
  for b in range(n_batches):
    result = jax.device_get(
      bridge_losses(bridges, dense_lm, sparse_lm, None, arr[b * batch_size : (b + 1) * batch_size])
    )
    for key, value in result.items():
      totals[key] = totals.get(key, 0.0) + float(value) / n_batches
  return totals


# --------------------------------------------------------------------------------------------
# Training.


@dataclasses.dataclass
class TrainResult:
  bridges: Bridges
  history: list[dict]  # logged training records, as in metrics.jsonl
  seconds: float
  tokens_per_second: float


def make_train_step(dense_config: TransformerConfig, sparse_config: TransformerConfig, optimizer):
  """(bridges, opt_state, dense_params, sparse_params, tokens) -> (bridges, opt_state, terms):
  one optimizer step on the bridges alone (both language models frozen)."""
  loss_fn = functools.partial(
    losses, dense_model=Transformer(dense_config), sparse_model=Transformer(sparse_config)
  )

  def step(bridges, opt_state, dense_params, sparse_params, tokens):
    def total(b):
      terms = loss_fn(b, dense_params, sparse_params, tokens)
      return terms["total"], terms

    (_, terms), grads = jax.value_and_grad(total, has_aux=True)(bridges)
    updates, opt_state = optimizer.update(grads, opt_state, bridges)
    bridges = optax.apply_updates(bridges, updates)
    terms = dict(terms, grad_norm=optax.tree.norm(grads))
    return bridges, opt_state, terms

  return step


def make_bridges(
  config: BridgeConfig, dense_lm, sparse_lm, train_windows: pipeline.PackedWindows
) -> Bridges:
  """Untrained bridges at the config's sites: random, or (init "lstsq") the least-squares linear
  maps on `config.init_windows` windows drawn at random (by the seed) from `train_windows`."""
  check_pair(None, dense_lm, sparse_lm)
  sites = config.resolve_sites(dense_lm.config.n_layers)
  k = config.topk_count(sparse_lm.config)
  bridges = init_bridges(
    dense_lm.config.d_model, sparse_lm.config.d_model, sites, k, jax.random.key(config.seed)
  )
  if config.init == "lstsq":
    rng = np.random.default_rng([config.seed, 1])
    n = min(config.init_windows, len(train_windows))
    chosen = np.sort(rng.choice(len(train_windows), size=n, replace=False))
    bridges = fit_linear(bridges, dense_lm, sparse_lm, np.stack([train_windows[i] for i in chosen]))
  return bridges


def train_bridges(
  config: BridgeConfig,
  dense_lm,
  sparse_lm,
  train_windows: pipeline.PackedWindows,
  *,
  workdir: str | pathlib.Path | None = None,
  bridges: Bridges | None = None,
) -> TrainResult:
  """Train bridges between two frozen models on shuffled windows (Adam, constant lr), with a
  progress bar in tokens/s; with `workdir`, log records to metrics.jsonl and TensorBoard.
  `bridges` None starts from `make_bridges`; given bridges keep their own sites and k. No
  checkpoints: a run is minutes."""
  check_pair(bridges, dense_lm, sparse_lm)
  if bridges is None:
    bridges = make_bridges(config, dense_lm, sparse_lm, train_windows)
  batches = pipeline.train_batches(train_windows, config.batch_size, seed=config.seed)
  optimizer = optax.adam(config.lr)
  opt_state = optimizer.init(bridges)
  step_fn = jax.jit(make_train_step(dense_lm.config, sparse_lm.config, optimizer))
  tokens_per_step = config.batch_size * train_windows.seq_len
  log = run_log.RunLog(workdir) if workdir is not None else None
  bar = run_log.progress(config.steps * tokens_per_step, desc="bridges")
  history, start, first_done = [], time.time(), None
  try:
    for step in range(1, config.steps + 1):
      tokens = jnp.asarray(next(batches)["tokens"])
      bridges, opt_state, terms = step_fn(
        bridges, opt_state, dense_lm.params, sparse_lm.params, tokens
      )
      if step == 1:  # Throughput excludes compilation.
        jax.block_until_ready(terms)
        first_done = time.time()
      bar.update(tokens_per_step)
      if step % config.log_every == 0 or step == config.steps or step == 1:
        values = {k_: float(v) for k_, v in jax.device_get(terms).items()}
        history.append({"step": step, **values})
        bar.set_postfix(total=f"{values['total']:.3f}")
        if log is not None:
          log.write(step, values, split="train")
    jax.block_until_ready(bridges)
  finally:
    bar.close()
    if log is not None:
      log.close()
  end = time.time()
  timed_steps = config.steps - 1
  rate = timed_steps * tokens_per_step / max(end - first_done, 1e-9) if timed_steps else 0.0
  return TrainResult(bridges, history, end - start, rate)


# --------------------------------------------------------------------------------------------
# Saving.


def save_bridges(
  path: str | pathlib.Path,
  bridges: Bridges,
  config: BridgeConfig | None = None,
  metadata: Mapping[str, Any] | None = None,
) -> pathlib.Path:
  """Write `bridges.safetensors` (tensors named "<site>/<W_enc|b_enc|W_dec|b_dec>") and the JSON
  sidecar `bridges.json` (sites, k, widths, config, metadata) to the folder `path`."""
  from safetensors.numpy import save_file

  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  flat = {
    f"{site}/{name}": np.asarray(jax.device_get(value), np.float32)
    for site, tensors in bridges.weights.items()
    for name, value in tensors.items()
  }
  save_file(flat, str(path / WEIGHTS_FILE))
  doc = {
    "format": FORMAT,
    "format_version": FORMAT_VERSION,
    "sites": list(bridges.sites),
    "k": bridges.k,
    "d_dense": bridges.d_dense,
    "d_sparse": bridges.d_sparse,
    "config": config.to_dict() if config is not None else None,
    "metadata": dict(metadata or {}),
  }
  (path / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n")
  return path


def load_bridges(path: str | pathlib.Path) -> tuple[Bridges, BridgeConfig | None]:
  """(bridges, config) from a folder written by `save_bridges`; every tensor's shape checked."""
  path = pathlib.Path(path)
  config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
  if not config_file.is_file() or not weights_file.is_file():
    raise CheckpointError(
      f"no saved bridges at {path}: expected {CONFIG_FILE} and {WEIGHTS_FILE} (written by "
      "jaxsae.sparse.bridges.save_bridges)"
    )
  doc = saved.read_document(config_file, FORMAT, FORMAT_VERSION, "save the bridges again")
  sites, dd, ds = list(doc["sites"]), int(doc["d_dense"]), int(doc["d_sparse"])
  shapes = {"W_enc": (dd, ds), "b_enc": (ds,), "W_dec": (ds, dd), "b_dec": (dd,)}
  expected = {f"{s}/{n}": shape for s in sites for n, shape in shapes.items()}
  flat = saved.read_tensors(weights_file, expected, CONFIG_FILE)
  weights = {s: {n: jnp.asarray(flat[f"{s}/{n}"]) for n in shapes} for s in sites}
  config = BridgeConfig.from_dict(doc["config"]) if doc.get("config") else None
  return Bridges(weights, tuple(sites), int(doc["k"])), config
