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

With `cross_layer` False the mask keeps only each feature's own block: per-layer transcoders
of all L layers, trained together from one forward pass (their record is a list of
`Transcoder`s). They decode block by block (`own_layer_decode`): L products of B × n/L · n/L × d,
1/L of the dense product's FLOPs; the zero blocks still cost (L − 1)/L of the decoder's memory
and of Adam's elementwise pass, which keeps one parameter layout for both kinds.

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


def own_layer_decode(z_BxN: jax.Array, W_dec_NxLD: jax.Array, layers: int, matmul) -> jax.Array:
  """ŷ_l = z_l W_dec^{l→l} (before b_dec) for per-layer transcoders: each layer's features times
  their own block only, B × L·d_out, latents in the local order. Equal to z (M ⊙ W_dec) with the
  own-layer M; the gather gives the other blocks no gradient, as the mask does."""
  B, n = z_BxN.shape
  F, d = n // layers, W_dec_NxLD.shape[1] // layers
  own = jnp.arange(layers)
  W_FxLxD = W_dec_NxLD.reshape(F, layers, layers, d)[:, own, own, :]  # Block (l → l) of row f·L+l.
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
  d_out = config.d_target // L
  W_dec = p["W_dec"].reshape(-1, L, L, d_out)  # feature, layer read, layer written, d_out
  clt = CrossLayerTranscoder(
    W_enc=np.stack([p["W_enc"][:, l::L] * c for l in range(L)]),
    b_enc=np.stack([p["b_enc"][l::L] for l in range(L)]),
    W_dec=tuple(W_dec[:, l, l:] / c_y for l in range(L)),
    b_dec=p["b_dec"].reshape(L, d_out) / c_y,
    activation=config.architecture,
    threshold=np.stack([p["threshold"][l::L] for l in range(L)]) if "threshold" in p else None,
    input_hooks=tuple(input_hooks),
    output_hooks=tuple(output_hooks),
  )
  if config.cross_layer:
    return clt
  hook = lambda names, l: names[l] if names else None  # noqa: E731
  return [  # Each layer's own block of the decoder: the only one it writes.
    Transcoder(
      W_enc=clt.W_enc[l],
      b_enc=clt.b_enc[l],
      W_dec=clt.W_dec[l][:, 0],
      b_dec=clt.b_dec[l],
      activation=clt.activation,
      threshold=None if clt.threshold is None else clt.threshold[l],
      input_hook=hook(clt.input_hooks, l),
      output_hook=hook(clt.output_hooks, l),
    )
    for l in range(L)
  ]
