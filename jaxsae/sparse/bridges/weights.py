"""Bridge weights: per-site encoder Enc(h_d) = AbsTopK_k(h_d W_enc + b_enc) and decoder
Dec(h_s) = h_s W_dec + b_dec, their random and least-squares starts, and the check that two
models and their bridges fit together."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxsae.errors import JaxsaeError
from jaxsae.models.transformer import abs_topk
from jaxsae.sparse.bridges.config import check_sites


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
