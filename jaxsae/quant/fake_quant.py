"""Symmetric int8 fake quantization (quantize, then dequantize, in float) of weights and
activations, as in SmoothQuant's W8A8 (Xiao et al. 2023, §2):

    Δ = max|X| / (2^(N-1) - 1),   X̄ = clip(round(X / Δ), -127, 127),   X̂ = Δ · X̄

with max|X| taken per output channel of a weight ("per_channel") or over the whole tensor
("per_tensor"), and for activations per token ("per_token", dynamic), over the tensor of each
forward batch ("per_tensor", dynamic) or from calibration ("per_tensor_static", SmoothQuant-O3).
Since Δ comes from the values' own maximum (dynamic modes), |X̂ - X| ≤ Δ/2 everywhere; a static
scale clips values beyond its calibrated maximum.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxsae.errors import JaxsaeError
from jaxsae.models import weights

QMAX = 127
WEIGHT_MODES = ("per_channel", "per_tensor")
ACTIVATION_MODES = ("per_token", "per_tensor", "per_tensor_static")


def step(absmax: jnp.ndarray) -> jnp.ndarray:
  """The quantization step Δ = max|x| / 127; 1 where max|x| is 0 (the values are all 0)."""
  absmax = jnp.asarray(absmax, jnp.float32)
  return jnp.where(absmax > 0, absmax / QMAX, 1.0)


def quantize(x: jnp.ndarray, absmax: jnp.ndarray) -> jnp.ndarray:
  """int8 codes clip(round(x / Δ), -127, 127); `absmax` broadcasts against x."""
  codes = jnp.clip(jnp.round(x.astype(jnp.float32) / step(absmax)), -QMAX, QMAX)
  return codes.astype(jnp.int8)


def fake_quantize(x: jnp.ndarray, absmax: jnp.ndarray) -> jnp.ndarray:
  """Δ · quantize(x): x rounded to the int8 grid of step Δ, in x's dtype."""
  return (quantize(x, absmax).astype(jnp.float32) * step(absmax)).astype(x.dtype)


def check_mode(mode: str, modes: tuple[str, ...], what: str) -> None:
  if mode not in modes:
    raise JaxsaeError(f"unknown {what} quantization {mode!r}; use one of {modes}")


def quantize_weight(kernel: jnp.ndarray, input_axes: int, mode: str = "per_channel") -> jnp.ndarray:
  """Fake-quantized kernel: one Δ per output channel (the axes after the first `input_axes`)
  or one for the whole kernel."""
  check_mode(mode, WEIGHT_MODES, "weight")
  axes = tuple(range(input_axes)) if mode == "per_channel" else None
  return fake_quantize(kernel, jnp.max(jnp.abs(kernel), axis=axes, keepdims=mode == "per_channel"))


def quantize_weights(params: Any, n_layers: int, mode: str = "per_channel") -> Any:
  """Params with every block linear kernel (each role of `jaxsae.models.weights` the model has,
  a gated MLP's gate included) fake-quantized; biases, norms, embeddings unchanged: int8 GEMMs
  keep a higher-precision bias, and the (un)embedding is not a block GEMM here."""
  params = jax.tree_util.tree_map(lambda a: a, params)  # New containers; arrays shared.
  for layer in range(n_layers):
    for role, kernel in weights.layer_weights(params, layer).kernels().items():
      quantized = quantize_weight(kernel, weights.LINEARS[role].input_axes, mode)
      weights.set_leaf(params, weights.kernel_path(layer, role), quantized)
  return params


def quantize_activation(
  x: jnp.ndarray, mode: str, per_head: bool = False, static_absmax: jnp.ndarray | None = None
) -> jnp.ndarray:
  """Fake-quantized linear input. per_token: one Δ per token row (over heads × dims jointly
  when `per_head`, the attn.z layout (..., H, K)); per_tensor: one Δ for the batch's tensor;
  per_tensor_static: Δ from `static_absmax`, the calibrated max, values beyond it clipped."""
  check_mode(mode, ACTIVATION_MODES, "activation")
  if mode == "per_token":
    axes = (-2, -1) if per_head else (-1,)
    return fake_quantize(x, jnp.max(jnp.abs(x), axis=axes, keepdims=True))
  if mode == "per_tensor":
    return fake_quantize(x, jnp.max(jnp.abs(x)))
  if static_absmax is None:
    raise JaxsaeError("per_tensor_static activation quantization needs calibrated maxima")
  return fake_quantize(x, static_absmax)
