"""Hook points: the one place that names every activation a forward pass can expose or edit.

These names are the contract between the transformer, activation harvesting, SAE splicing,
node ablation, pruning and steering. They are stable; add new ones, never rename.

Per layer l (B batch, T positions, D d_model, H heads, K d_head, F d_mlp):

  blocks.{l}.resid_pre      (B,T,D)    residual stream entering the block
  blocks.{l}.attn.in        (B,T,D)    attention input, after the norm
  blocks.{l}.attn.q         (B,T,H,K)  queries
  blocks.{l}.attn.k         (B,T,H,K)  keys
  blocks.{l}.attn.v         (B,T,H,K)  values
  blocks.{l}.attn.scores    (B,H,T,T)  q.k / sqrt(K), causally masked, before the softmax (f32)
  blocks.{l}.attn.pattern   (B,H,T,T)  attention probabilities (the sink's share excluded) (f32)
  blocks.{l}.attn.z         (B,T,H,K)  pattern-weighted values, per head
  blocks.{l}.attn.out       (B,T,D)    attention output, after W_O (and its bias)
  blocks.{l}.resid_mid      (B,T,D)    resid_pre + attn.out
  blocks.{l}.mlp.in         (B,T,D)    MLP input, after the norm
  blocks.{l}.mlp.pre        (B,T,F)    MLP pre-activation
  blocks.{l}.mlp.post       (B,T,F)    MLP post-activation (neurons)
  blocks.{l}.mlp.out        (B,T,D)    MLP output
  blocks.{l}.resid_post     (B,T,D)    resid_mid + mlp.out

Outside the blocks:

  embed.tok                 (B,T,D)    token embedding
  embed.pos                 (B,T,D)    position embedding (positions="learned" only)
  final.normed              (B,T,D)    final residual after the final norm: the unembedding input
  logits                    (B,T,V)    output logits, bigram table included (f32)

An edit is a function `x -> x'` of the same shape (the result is cast to x's dtype); a capture
records the value the forward pass goes on to use, i.e. after any edit at that point.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping

import flax.linen as nn
import jax.numpy as jnp

from jaxsae.errors import HookError

CAPTURE_COLLECTION = "captured"

BLOCK_SITES = (
  "resid_pre",
  "attn.in",
  "attn.q",
  "attn.k",
  "attn.v",
  "attn.scores",
  "attn.pattern",
  "attn.z",
  "attn.out",
  "resid_mid",
  "mlp.in",
  "mlp.pre",
  "mlp.post",
  "mlp.out",
  "resid_post",
)
RESIDUAL_SITES = ("resid_pre", "resid_mid", "resid_post")


def block(layer: int, site: str) -> str:
  """The hook name of `site` (one of BLOCK_SITES) in block `layer`, e.g. blocks.3.mlp.post."""
  if site not in BLOCK_SITES:
    raise HookError(f'unknown block site "{site}"; use one of {BLOCK_SITES}')
  return f"blocks.{layer}.{site}"


def all_names(n_layers: int, learned_positions: bool = True) -> list[str]:
  """Every hook name of a model, in the order the forward pass reaches them."""
  names = ["embed.tok"] + (["embed.pos"] if learned_positions else [])
  for layer in range(n_layers):
    names += [f"blocks.{layer}.{site}" for site in BLOCK_SITES]
  return names + ["final.normed", "logits"]


def parse(name: str) -> tuple[int | None, str]:
  """(layer, site) of a hook name; layer is None outside the blocks."""
  if name.startswith("blocks."):
    _, layer, site = name.split(".", 2)
    return int(layer), site
  return None, name


OUTER_NAMES = ("embed.tok", "embed.pos", "final.normed", "logits")


def name_problem(name: str) -> str | None:
  """Why `name` cannot be a hook of any model (None if its form is valid), with the closest
  valid form; checks what needs no model: the site, and a non-negative integer layer."""
  if not isinstance(name, str):
    return f"hook {name!r} must be a string such as blocks.1.resid_post"
  if not name.startswith("blocks."):
    if name in OUTER_NAMES:
      return None
    close = difflib.get_close_matches(name, [*OUTER_NAMES, "blocks.0.resid_post"], n=1)
    hint = f'; did you mean "{close[0]}"?' if close else "; e.g. blocks.1.resid_post"
    return f'unknown hook "{name}"{hint}'
  parts = name.split(".", 2)
  if len(parts) < 3 or not parts[1].isdigit():
    return f'hook "{name}" must read blocks.<layer>.<site>, e.g. blocks.1.resid_post'
  if parts[2] not in BLOCK_SITES:
    close = difflib.get_close_matches(parts[2], BLOCK_SITES, n=1)
    hint = f'; did you mean "blocks.{parts[1]}.{close[0]}"?' if close else ""
    return f'unknown site "{parts[2]}" in hook "{name}"{hint} (sites: {", ".join(BLOCK_SITES)})'
  return None


EditFn = Callable[[jnp.ndarray], jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class Hooks:
  """What one forward call captures and edits. Built by `Transformer.run`; rarely by hand."""

  capture: frozenset[str] = frozenset()
  edits: Mapping[str, EditFn] = dataclasses.field(default_factory=dict)

  @classmethod
  def make(cls, capture: Iterable[str] = (), edits: Mapping[str, EditFn] | None = None) -> Hooks:
    if isinstance(capture, str):
      capture = (capture,)
    return cls(frozenset(capture), dict(edits or {}))

  def check(self, known: list[str]) -> None:
    """Raise HookError naming every unknown hook, with the closest known name."""
    known_set, problems = set(known), []
    for name in sorted(set(self.capture) | set(self.edits)):
      if name not in known_set:
        close = difflib.get_close_matches(name, known, n=1)
        problems.append(f'"{name}"' + (f' (did you mean "{close[0]}"?)' if close else ""))
    if problems:
      raise HookError(
        f"unknown hook name(s) {', '.join(problems)}; the names are listed in "
        "jaxsae.models.hooks (all_names(n_layers) gives a model's full list)"
      )


def apply(module: nn.Module, hooks: Hooks | None, name: str, x: jnp.ndarray) -> jnp.ndarray:
  """Run the hook point `name` inside `module`: edit `x` if asked, then capture it if asked."""
  if hooks is None:
    return x
  edit = hooks.edits.get(name)
  if edit is not None:
    edited = jnp.asarray(edit(x))
    if edited.shape != x.shape:
      raise HookError(
        f'the edit at hook "{name}" returned shape {edited.shape}; it must return the shape it '
        f"was given, {x.shape}"
      )
    x = edited.astype(x.dtype)
  if name in hooks.capture:
    module.sow(CAPTURE_COLLECTION, name, x, init_fn=lambda: None, reduce_fn=lambda _, new: new)
  return x
