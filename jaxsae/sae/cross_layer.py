"""Cross-layer transcoders (CLTs): the geometry `SparseAutoencoder` takes on when `layers` = L > 1.

A CLT (Anthropic, "Circuit Tracing", 2025) replaces every MLP of an L-layer model at once. Its
features of layer l read that layer's MLP input x_l and write to the MLP output of every layer
l′ ≥ l:

    z_l  = f(x_l W_enc^l + b_enc^l)                      (n/L features per layer)
    ŷ_l′ = Σ_{l ≤ l′} z_l W_dec^{l→l′} + b_dec^l′
    L    = Σ_l′ ‖ỹ_l′ − ŷ_l′‖² / sg(‖ỹ_l′ − mean(ỹ_l′)‖²)  (batch sums: each layer's normalized
           MSE, so no layer's scale outweighs another's) + the activation's sparsity term.

jaxsae holds a CLT in the arrays of a one-site dictionary, so the trainer, sharding, sweeps,
checkpoints and evaluations need nothing new:

- x and y are the L layers side by side, x = [x_0 … x_{L−1}] (d_in = L·d), y likewise;
- latent g belongs to layer g mod L and is feature g div L of it (feature-major), so a
  contiguous slice of latents (a `model` shard) holds the same features of every layer;
- W_enc is d × n (column g reads x_{g mod L}) and W_dec is n × L·d_out, each row the feature's
  writes to every layer, with the blocks of layers before its own held at zero: the decoder
  used is M ⊙ W_dec (`decoder_mask`), so those blocks get no gradient and stay at zero.

With `cross_layer` False each feature writes its own layer only: per-layer transcoders of all L
layers, trained together from one forward pass (their record is a list of `Transcoder`s). Their
W_dec is n × d_out, row g the block latent g writes to layer g mod L (no zero blocks: a CLT's
layout would hold (L − 1)/L of the decoder at zero, and Adam, the gather's gradient and the
row norms would pay for them). They decode block by block (`own_layer_decode`): L products of
B × n/L · n/L × d_out, 1/L of a CLT's dense product's FLOPs. At Gemma 3 270M's 18 × 256
features, batch 256, that took a training step from 353 ms (zero blocks kept) to 118 ms
(`docs/attribution/RESULTS.md`'s speed table, beside sparsify's 18 transcoders at 42 ms).

Decoder row norms are so over all target layers, as the tanh and L1 penalties and the unit-norm
constraint want. The price of the plain matrix is the zero blocks: (L − 1)/2L of the decoder
(circuit-tracer's [n/L, L − l, d] per layer stores none); `to_record` drops them. Multiplying
only the nonzero blocks, L products of B × n/L · n/L × (L − l)·d, was measured no faster on CPU
than the one dense product (0.57 s against 0.58 s for a step's loss and gradient at Gemma 3
270M's 18 × 256 features, batch 256): the small products lose what the zeros save.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Architectures whose code a CLT is trained with (elementwise or top-k selections, nothing that
# assumes the one-site geometry: Gated's and ProLU's extra paths do).
ARCHITECTURES = ("topk", "batchtopk", "relu", "jumprelu")


def config_problems(cfg) -> list[str]:
  """Problems of an SAEConfig with layers > 1, each with its fix."""
  L = cfg.layers
  if not isinstance(L, int) or L < 1:
    return [f"sae.layers={L!r} must be a positive int (1: a single-site dictionary)"]
  p = []
  if cfg.architecture not in ARCHITECTURES:
    p.append(f"a cross-layer transcoder (sae.layers={L}) is trained as one of {ARCHITECTURES}, "
             f"not {cfg.architecture!r}")  # fmt: skip
  if not cfg.transcode:
    p.append(f"sae.layers={L} makes a cross-layer transcoder, which needs (input, target) pairs: "
             "set sae.transcode=True (the trainer does when data.target is given)")  # fmt: skip
  for name, width in (("d_in", cfg.d_in), ("d_out", cfg.d_target), ("n_latents", cfg.n_latents)):
    if width % L:
      p.append(f"sae.{name}={width} is not a multiple of sae.layers={L}: it holds every layer")
  if cfg.skip:
    p.append("skip connections are not built for cross-layer transcoders yet; set sae.skip=False")
  if cfg.matryoshka:
    p.append(
      "Matryoshka prefixes are not defined for cross-layer transcoders; set sae.matryoshka=()"
    )
  if cfg.topk_path == "sparse":
    p.append("a cross-layer transcoder trains on the dense top-k path; set sae.topk_path='auto'")
  return p


def layer_of(index_N: jax.Array, layers: int) -> jax.Array:
  """The layer each latent (by global index) reads."""
  return index_N % layers


def decoder_mask(index_N: jax.Array, layers: int, d_out: int, cross: bool = True) -> jax.Array:
  """M (n_local × L·d_out): 1 where latent g may write (layers ≥ its own; with `cross` False,
  its own only), else 0."""
  target_layer = jnp.arange(layers * d_out)[None, :] // d_out
  own = layer_of(index_N, layers)[:, None]
  return (target_layer >= own if cross else target_layer == own).astype(jnp.float32)


def pre_activations(x_BxLD: jax.Array, W_enc_DxN: jax.Array, layers: int, matmul) -> jax.Array:
  """pre[b, g] = x_{g mod L}[b] · W_enc[:, g] (before b_enc), latents in the local order."""
  B, d = x_BxLD.shape[0], W_enc_DxN.shape[0]
  x_BxLxD = x_BxLD.reshape(B, layers, d)
  W_DxIxL = W_enc_DxN.reshape(d, -1, layers)
  out = jax.vmap(matmul, in_axes=(1, 2), out_axes=2)(x_BxLxD, W_DxIxL)  # B × n/L × L
  return out.reshape(B, -1)


def own_layer_decode(z_BxN: jax.Array, W_dec_NxD: jax.Array, layers: int, matmul) -> jax.Array:
  """ŷ_l = z_l W_dec^{l→l} (before b_dec) for per-layer transcoders: each layer's features times
  their own rows (W_dec n × d_out, row g written to layer g mod L), B × L·d_out, latents in the
  local order. Equal to z (M ⊙ W) for the n × L·d_out W holding row g in block g mod L."""
  B, n = z_BxN.shape
  F, d = n // layers, W_dec_NxD.shape[1]
  W_FxLxD = W_dec_NxD.reshape(F, layers, d)  # Row f·L + l: feature f of layer l.
  z_BxFxL = z_BxN.reshape(B, F, layers)
  y_BxLxD = jax.vmap(matmul, in_axes=(2, 1), out_axes=1)(z_BxFxL, W_FxLxD)
  return y_BxLxD.reshape(B, layers * d)


def per_layer_sums(v_BxLD: jax.Array, layers: int) -> jax.Array:
  """Σ over each layer's d_out columns and the (local) batch: L values."""
  return jnp.sum(v_BxLD.reshape(v_BxLD.shape[0], layers, -1), axis=(0, 2))


def record(
  config,
  params: dict,
  scale: float = 1.0,
  target_scale: float | None = None,
  input_hooks: tuple[str, ...] = (),
  output_hooks: tuple[str, ...] = (),
):
  """The CLT as a `zoo.transcoders.CrossLayerTranscoder` on raw activations (both scales
  folded; the zero blocks dropped): what circuit-tracer's format and the replacement model
  read; with `cross_layer` False, the list of per-layer `Transcoder`s instead. TopK and
  BatchTopK CLTs have no such record (circuit-tracer's CLTs are JumpReLU or ReLU; their top-k
  runs over every layer's features at once, which no per-layer transcoder does)."""
  from jaxsae.sae.zoo.transcoders import CrossLayerTranscoder, Transcoder

  if config.architecture not in ("relu", "jumprelu"):
    raise ValueError(
      f"only relu and jumprelu CLTs have a circuit-tracer form, not {config.architecture}"
    )
  L, c = config.layers, float(scale)
  c_y = c if target_scale is None else float(target_scale)
  p = {k: np.asarray(v, np.float32) for k, v in params.items()}
  d_out = config.d_layer_out
  W_enc = [p["W_enc"][:, l::L] * c for l in range(L)]  # Latent f·L + l: feature f of layer l.
  b_enc = [p["b_enc"][l::L] for l in range(L)]
  threshold = [p["threshold"][l::L] for l in range(L)] if "threshold" in p else None
  b_dec = p["b_dec"].reshape(L, d_out) / c_y
  if not config.cross_layer:  # Row f·L + l of W_dec (n × d_out): its own layer's block.
    hook = lambda names, l: names[l] if names else None  # noqa: E731
    return [
      Transcoder(
        W_enc=W_enc[l],
        b_enc=b_enc[l],
        W_dec=p["W_dec"][l::L] / c_y,
        b_dec=b_dec[l],
        activation=config.architecture,
        threshold=None if threshold is None else threshold[l],
        input_hook=hook(input_hooks, l),
        output_hook=hook(output_hooks, l),
      )
      for l in range(L)
    ]
  W_dec = p["W_dec"].reshape(-1, L, L, d_out)  # feature, layer read, layer written, d_out
  return CrossLayerTranscoder(
    W_enc=np.stack(W_enc),
    b_enc=np.stack(b_enc),
    W_dec=tuple(W_dec[:, l, l:] / c_y for l in range(L)),
    b_dec=b_dec,
    activation=config.architecture,
    threshold=None if threshold is None else np.stack(threshold),
    input_hooks=tuple(input_hooks),
    output_hooks=tuple(output_hooks),
  )
