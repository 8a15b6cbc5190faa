"""W8A8 evaluation: a model's held-out loss with int8 weights and int8 linear inputs, naive or
smoothed, beside its float loss.

A scheme is (weights, activations, alpha): weights "per_channel" | "per_tensor"; activations
"per_token" | "per_tensor" | "per_tensor_static" (jaxsae.quant.fake_quant); alpha None for naive
W8A8, else SmoothQuant's migration strength. Every block GEMM input (linear_inputs.SITES) is
fake-quantized through a hook edit, and every block kernel is fake-quantized in the parameters.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from jaxsae import sharding
from jaxsae.lm import evaluate as eval_lib
from jaxsae.models.language_model import LanguageModel
from jaxsae.quant import fake_quant, linear_inputs, smoothing
from jaxsae.quant.stats import ChannelStats
from jaxsae.text.pipeline import PackedWindows


@dataclasses.dataclass(frozen=True)
class Scheme:
  weights: str = "per_channel"
  activations: str = "per_token"
  alpha: float | None = None  # None: naive W8A8 (no smoothing).
  smooth_sites: tuple[str, ...] = smoothing.DEFAULT_SITES

  @property
  def label(self) -> str:
    smoothed = "naive" if self.alpha is None else f"smoothed α={self.alpha:g}"
    return f"W8A8 {self.weights} W, {self.activations} A, {smoothed}"


def quantized_edits(n_layers: int, mode: str, static_absmax: dict[str, jax.Array] | None):
  """Hook edits that fake-quantize every linear input of every block."""
  edits = {}
  for hook in linear_inputs.all_hooks(n_layers):
    per_head = hook.endswith("attn.z")
    scale = None if static_absmax is None else static_absmax[hook]

    def edit(x, per_head=per_head, scale=scale):
      return fake_quant.quantize_activation(x, mode, per_head, scale)

    edits[hook] = edit
  return edits


def static_maxima(stats: ChannelStats) -> dict[str, np.ndarray]:
  """Per-tensor calibrated max |x| of every linear input (SmoothQuant-O3's static scales)."""
  hooks = [h for h in stats.absmax if h != linear_inputs.UNEMBED_INPUT]  # Not quantized.
  return {h: np.float32(stats.absmax[h].max()) for h in hooks}


def quantized_params(lm: LanguageModel, stats: ChannelStats, scheme: Scheme):
  """(params with smoothing folded in and kernels fake-quantized, the matching statistics)."""
  params = lm.params
  if scheme.alpha is not None:
    params, scales = smoothing.smooth(params, lm.config, stats, scheme.alpha, scheme.smooth_sites)
    stats = smoothing.smoothed_stats(stats, scales)
  params = fake_quant.quantize_weights(params, lm.config.n_layers, scheme.weights)
  return params, stats


class Evaluator:
  """Held-out loss of one model under many schemes, with one compiled step per activation mode."""

  def __init__(
    self,
    lm: LanguageModel,
    windows: PackedWindows,
    stats: ChannelStats,
    *,
    batch_size: int = 16,
    max_sequences: int | None = None,
    mesh=None,
  ):
    self.lm, self.windows, self.stats = lm, windows, stats
    self.batch_size, self.max_sequences = batch_size, max_sequences
    self.mesh = mesh or sharding.make_mesh()
    self._steps: dict[str | None, Any] = {}

  def _step(self, activations: str | None):
    if activations not in self._steps:
      n_layers = self.lm.config.n_layers
      edits_of = None
      if activations is not None:  # Static maxima are traced: new scales do not recompile.
        edits_of = functools.partial(quantized_edits, n_layers, activations)
      lengths = self.lm.tokenizer.token_byte_lengths()
      step = eval_lib.make_eval_step(self.lm.module, lengths, edits_of)
      self._steps[activations] = jax.jit(step)
    return self._steps[activations]

  def _evaluate(self, params, activations, static) -> eval_lib.LMEval:
    step = self._step(activations)
    params = jax.device_put(params, sharding.replicated(self.mesh))
    static = jax.device_put(static, sharding.replicated(self.mesh))
    bound = lambda p, batch: step(p, batch, static)  # noqa: E731
    return eval_lib.evaluate(
      bound, params, self.windows, self.batch_size, self.mesh, self.max_sequences
    )

  def float_loss(self) -> eval_lib.LMEval:
    return self._evaluate(self.lm.params, None, None)

  def scheme_loss(self, scheme: Scheme) -> eval_lib.LMEval:
    fake_quant.check_mode(scheme.activations, fake_quant.ACTIVATION_MODES, "activation")
    params, stats = quantized_params(self.lm, self.stats, scheme)
    static = static_maxima(stats) if scheme.activations == "per_tensor_static" else None
    return self._evaluate(params, scheme.activations, static)
