"""Where a token is, for attention: rotary position embeddings (RoPE, Su et al. 2021) and the
causal mask, with its sliding window on local layers.

    q'_t = R(t) q_t,  k'_s = R(s) k_s,  so  q'_t · k'_s = q_t R(s − t) k_s   (relative positions)

R(t) rotates dimension pair i of every head by the angle t·θ_i, θ_i = theta^(−2i / d_rot)
(`rotary_inverse_frequencies`, with Llama 3.1's or linear scaling), in Hugging Face's
rotate-half layout (`apply_rotary`). Learned absolute positions live in the transformer itself.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxsae.models.config import TransformerConfig


def rotary_inverse_frequencies(cfg: TransformerConfig, layer: int) -> jnp.ndarray:
  """(d_rot / 2,) float32 angular speeds of RoPE's dimension pairs at block `layer`:
  theta^(-2i / d_rot) (Su et al. 2021), with the layer type's theta and the config's scaling
  (Llama 3.1's smooth wavelength-dependent division, or a linear division of every speed)."""
  sliding = cfg.layer_type(layer) == "sliding"
  theta = cfg.rope_local_theta if sliding and cfg.rope_local_theta else cfg.rope_theta
  d_rot = cfg.rotary_dim
  inv = 1.0 / theta ** (jnp.arange(0, d_rot, 2, dtype=jnp.float32) / d_rot)
  factor = cfg.rope_scaling_factor
  if cfg.rope_scaling == "linear" and not (sliding and cfg.rope_local_theta):
    # Gemma 3 4B+ scale only the full-attention layers, which carry the global theta.
    inv = inv / factor
  elif cfg.rope_scaling == "llama3":
    low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    wavelength = 2 * math.pi / inv
    long = wavelength > cfg.rope_original_max_len / low
    short = wavelength < cfg.rope_original_max_len / high
    smooth = (cfg.rope_original_max_len / wavelength - low) / (high - low)
    scaled = jnp.where(long, inv / factor, inv)
    inv = jnp.where(long | short, scaled, (1 - smooth) * scaled / factor + smooth * scaled)
  return inv


def apply_rotary(x_BxTxHxK: jnp.ndarray, inv_freq: jnp.ndarray) -> jnp.ndarray:
  """Rotate the first d_rot = 2 len(inv_freq) dimensions of every head by position * speed, in
  Hugging Face's rotate-half layout (pair i is dimensions i and i + d_rot / 2); the rest pass."""
  d_rot = 2 * inv_freq.shape[0]
  T = x_BxTxHxK.shape[1]
  angles_TxR = jnp.arange(T, dtype=jnp.float32)[:, None] * inv_freq[None, :]
  angles_TxR = jnp.concatenate([angles_TxR, angles_TxR], axis=-1)
  cos, sin = jnp.cos(angles_TxR)[:, None], jnp.sin(angles_TxR)[:, None]
  x_rot, x_pass = x_BxTxHxK[..., :d_rot], x_BxTxHxK[..., d_rot:]
  x1, x2 = x_rot[..., : d_rot // 2], x_rot[..., d_rot // 2 :]
  rotated = x_rot * cos + jnp.concatenate([-x2, x1], axis=-1) * sin
  return jnp.concatenate([rotated.astype(x_BxTxHxK.dtype), x_pass], axis=-1)


def attention_mask(cfg: TransformerConfig, layer: int, T: int) -> jnp.ndarray:
  """(T, T) bool: query t sees key s <= t, and on sliding layers only s > t - sliding_window."""
  q_T1, s_1T = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
  mask = s_1T <= q_T1
  if cfg.layer_type(layer) == "sliding":
    mask &= s_1T > q_T1 - cfg.sliding_window
  return mask
