"""Explore an SAE's latents in memory (notebooks): codes over token windows, latent cards with
top and quantile contexts and logit weights, rendered inline or written as a browser.

    x = hook activations of `windows` (W×T×D), z = SAE codes (rows r = w·T + t, kept sparse)
    density(i) = #{r : z_ri > 0} / (W·T)       logit weights(i) = W_dec[i] · W_U

The same cards as `interp.browser` (which builds them from an activation store on disk); here
the windows are few enough to keep their activations in memory and re-encode on demand.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.interp import browser
from jaxsae.interp.contexts import SparseCodes, encode_padded
from jaxsae.sae import evaluate
from jaxsae.sae.config import SAEConfig

if TYPE_CHECKING:
  from jaxsae.models.language_model import LanguageModel


@dataclasses.dataclass(eq=False)
class Explorer:
  """An SAE (acting on raw activations, as exported) over `windows` of `lm` at `hook`."""

  lm: LanguageModel
  config: SAEConfig
  variables: Any
  hook: str
  windows: np.ndarray  # (W, T) token ids
  activations: np.ndarray  # (W·T, D) float32, row r = (r // T, r % T)

  @functools.cached_property
  def codes(self) -> SparseCodes:
    """The SAE's codes of every row, kept sparse (encoded 4096 rows at a time)."""
    step, n = 4096, len(self.activations)
    return SparseCodes.from_batches(
      (np.arange(lo, min(lo + step, n)), self.encode(self.activations[lo : lo + step]))
      for lo in range(0, n, step)
    )

  @property
  def rows_table(self) -> np.ndarray:
    W, T = self.windows.shape
    return np.stack([np.repeat(np.arange(W), T), np.tile(np.arange(T), W)], axis=1)

  @functools.cached_property
  def logits(self) -> browser.LogitWeights:
    W_dec = np.asarray(self.variables["params"]["W_dec"], np.float32)
    return browser.decoder_logits(W_dec, browser.unembedding(self.lm), k=10)

  @functools.cached_property
  def _encode(self):
    return jax.jit(lambda x: evaluate.encode_decode(self.config)(self.variables, x)[0])

  def encode(self, x_NxD) -> np.ndarray:
    """Codes (N, n_latents) of raw activations."""
    return encode_padded(self._encode, np.asarray(x_NxD, np.float32))

  def density(self) -> np.ndarray:
    """(n_latents,) share of positions where each latent fires."""
    return self.codes.density()

  def max_activation(self) -> np.ndarray:
    """(n_latents,) largest activation of each latent over the windows (0 if it never fires)."""
    out = np.zeros(self.config.n_latents, np.float32)
    np.maximum.at(out, self.codes.latents, self.codes.values)
    return out

  def summary(self, n: int = 20, by: str = "density") -> list[dict]:
    """Rows for a table of `n` latents sorted by "density" or "max_activation" (largest first),
    with each latent's top logit tokens."""
    keys = {"density": self.density(), "max_activation": self.max_activation()}
    if by not in keys:
      raise JaxsaeError(f'unknown sort key "{by}": use one of {sorted(keys)}')
    order = np.argsort(-keys[by], kind="stable")[:n]
    tokenizer = self.lm.tokenizer
    return [
      {
        "latent": int(i),
        "density": float(keys["density"][i]),
        "max_activation": float(keys["max_activation"][i]),
        "top_logit_tokens": " ".join(
          repr(browser.token_text(tokenizer, int(t))) for t in self.logits.top_ids[i][:5]
        ),
      }
      for i in order
    ]

  def _latent_codes_fn(self, latent: int):
    T = self.windows.shape[1]

    def fn(window_ids, positions):
      rows = np.asarray(window_ids, np.int64) * T + np.asarray(positions, np.int64)
      return self.encode(self.activations[rows])[:, latent]

    return fn

  def card(self, latent: int, *, n_top: int = 10, n_bins: int = 4, per_bin: int = 3):
    """A `browser.LatentCard`: top contexts, samples across activation quantiles, logits."""
    if not 0 <= latent < self.config.n_latents:
      raise JaxsaeError(f"latent={latent} is not in [0, {self.config.n_latents})")
    return browser.make_card(
      int(latent),
      self.codes,
      self.windows,
      self.rows_table,
      self._latent_codes_fn(int(latent)),
      self.lm.tokenizer,
      n_top=n_top,
      n_bins=n_bins,
      per_bin=per_bin,
      logits=self.logits,
    )

  def card_html(self, latent: int, **options) -> str:
    """The latent's page as an HTML string (show it with IPython.display.HTML)."""
    return browser.card_html(self.card(latent, **options), self.lm.tokenizer, self.hook)

  def write_browser(self, directory, latents) -> Any:
    """`interp.browser.write_browser` for the given latents; returns the index path."""
    cards = [self.card(int(i)) for i in latents]
    return browser.write_browser(directory, cards, self.lm.tokenizer, self.hook, ("density",))


def explore(
  lm: LanguageModel,
  config: SAEConfig,
  variables: Any,
  hook: str,
  windows_WxT,
  batch_windows: int = 16,
) -> Explorer:
  """Run `lm` over the windows, capture `hook`, encode every position with the SAE."""
  windows_WxT = np.asarray(windows_WxT, np.int32)
  if windows_WxT.ndim != 2:
    raise JaxsaeError(f"windows must be (W, T) token ids, got shape {windows_WxT.shape}")
  if hook not in lm.hook_names():
    raise JaxsaeError(f'the model has no hook "{hook}"; use one of lm.hook_names()')
  acts = []
  for lo in range(0, len(windows_WxT), batch_windows):
    _, captured = lm.run(windows_WxT[lo : lo + batch_windows], capture=[hook])
    acts.append(np.asarray(captured[hook], np.float32).reshape(-1, captured[hook].shape[-1]))
  activations = np.concatenate(acts)
  if activations.shape[1] != config.d_in:
    raise JaxsaeError(
      f"the SAE reads width {config.d_in} but {hook} has width {activations.shape[1]}: load the "
      "SAE trained on this hook"
    )
  return Explorer(lm, config, variables, hook, windows_WxT, activations)
