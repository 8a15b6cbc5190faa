"""Hook points: the one place that names every activation a forward pass can expose or edit.

These names are the contract between the transformer, activation harvesting, SAE splicing,
node ablation, pruning and steering. They are stable; add new ones, never rename.

Per layer l (B batch, T positions, D d_model, H heads, K d_head, F d_mlp):

  blocks.{l}.resid_pre      (B,T,D)    residual stream entering the block
  blocks.{l}.attn.norm_factor (B,T,1)  the attention input norm's 1/√(mean(x²) + ε) (1/σ for
                                       LayerNorm): holding it fixed makes the norm linear
  blocks.{l}.attn.in        (B,T,D)    attention input, after the norm
  blocks.{l}.attn.q         (B,T,H,K)  queries (after QK-norm, before RoPE)
  blocks.{l}.attn.k         (B,T,G,K)  keys, per KV head (G = n_kv_heads, = H unless grouped)
  blocks.{l}.attn.v         (B,T,G,K)  values, per KV head
  blocks.{l}.attn.rot_q     (B,T,H,K)  queries after RoPE          (rotary models only)
  blocks.{l}.attn.rot_k     (B,T,G,K)  keys after RoPE             (rotary models only)
  blocks.{l}.attn.scores    (B,H,T,T)  q.k / sqrt(K) [soft-capped], masked, before the softmax (f32)
  blocks.{l}.attn.pattern   (B,H,T,T)  attention probabilities (the sink's share excluded) (f32)
  blocks.{l}.attn.z         (B,T,H,K)  pattern-weighted values, per query head
  blocks.{l}.attn.proj      (B,T,D)    W_O's output before the post-norm  (post-norm models only)
  blocks.{l}.attn.post_norm_factor (B,T,1) the post-norm's factor         (post-norm models only)
  blocks.{l}.attn.out       (B,T,D)    what attention adds to the residual stream: W_O's output
                                       (and bias), after the post-norm where there is one
  blocks.{l}.resid_mid      (B,T,D)    resid_pre + attn.out (parallel blocks: the MLP reads
                                       resid_pre, not this)
  blocks.{l}.mlp.norm_factor (B,T,1)   the MLP input norm's factor
  blocks.{l}.mlp.in         (B,T,D)    MLP input, after the norm
  blocks.{l}.mlp.pre        (B,T,F)    MLP pre-activation: the argument of the nonlinearity
                                       (the gate projection in gated MLPs)
  blocks.{l}.mlp.linear     (B,T,F)    the linear ("up") branch of a gated MLP (gated only)
  blocks.{l}.mlp.post       (B,T,F)    MLP neurons: act(pre) [* linear], fc_out's input
  blocks.{l}.mlp.proj       (B,T,D)    fc_out's output before the post-norm (post-norm models only)
  blocks.{l}.mlp.post_norm_factor (B,T,1)  the post-norm's factor         (post-norm models only)
  blocks.{l}.mlp.out        (B,T,D)    what the MLP adds to the residual stream
  blocks.{l}.resid_post     (B,T,D)    resid_mid + mlp.out

Outside the blocks:

  embed.tok                 (B,T,D)    token embedding (times sqrt(D) where the model scales it)
  embed.pos                 (B,T,D)    position embedding (positions="learned" only)
  final.norm_factor         (B,T,1)    the final norm's factor
  final.normed              (B,T,D)    final residual after the final norm: the unembedding input
  logits                    (B,T,V)    output logits, bigram table included (f32)

`all_names(config)` lists a model's hooks: the optional sites above appear only where its
config has them. TransformerLens-style names (`blocks.3.hook_resid_post`, `blocks.3.hook_mlp_out`,
`blocks.3.ln2.hook_normalized`, `blocks.3.attn.hook_z`, `blocks.3.mlp.hook_in`, ...), as SAELens,
Gemma Scope and circuit-tracer metadata use them, are aliases accepted wherever a hook name is
taken (`canonical` maps them; see `TL_BLOCK_ALIASES`). TransformerLens's `ln*.hook_normalized`
is taken after the norm's gain, which equals TransformerLens's value when it folds the gains
into the next weights (its default).

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
  "attn.norm_factor",
  "attn.in",
  "attn.q",
  "attn.k",
  "attn.v",
  "attn.rot_q",
  "attn.rot_k",
  "attn.scores",
  "attn.pattern",
  "attn.z",
  "attn.proj",
  "attn.post_norm_factor",
  "attn.out",
  "resid_mid",
  "mlp.norm_factor",
  "mlp.in",
  "mlp.pre",
  "mlp.linear",
  "mlp.post",
  "mlp.proj",
  "mlp.post_norm_factor",
  "mlp.out",
  "resid_post",
)
"""Every block site any model has, in forward order; `block_sites(config)` gives one model's."""
RESIDUAL_SITES = ("resid_pre", "resid_mid", "resid_post")
NORM_FACTOR_SITES = (
  "attn.norm_factor",
  "attn.post_norm_factor",
  "mlp.norm_factor",
  "mlp.post_norm_factor",
)
"""Each norm's 1/σ, shaped (B, T, 1): not activations (no SAE or circuit node reads them)."""
PER_HEAD_SITES = ("attn.q", "attn.k", "attn.v", "attn.rot_q", "attn.rot_k", "attn.z")
"""Sites shaped (B, T, heads, d_head); circuit nodes at these sites (`sparse.nodes`) are their
heads x d_head channels flattened."""

# TransformerLens name (after "blocks.{l}.") -> our site.
TL_BLOCK_ALIASES = {
  "hook_resid_pre": "resid_pre",
  "ln1.hook_normalized": "attn.in",
  "attn.hook_q": "attn.q",
  "attn.hook_k": "attn.k",
  "attn.hook_v": "attn.v",
  "attn.hook_rot_q": "attn.rot_q",
  "attn.hook_rot_k": "attn.rot_k",
  "attn.hook_attn_scores": "attn.scores",
  "attn.hook_pattern": "attn.pattern",
  "attn.hook_z": "attn.z",
  "hook_attn_out": "attn.out",
  "hook_resid_mid": "resid_mid",
  "hook_mlp_in": "resid_mid",  # TransformerLens: the residual entering ln2 (sequential blocks).
  "ln2.hook_normalized": "mlp.in",
  "mlp.hook_in": "mlp.in",  # circuit-tracer's transcoder input: the MLP module's input.
  "mlp.hook_pre": "mlp.pre",
  "mlp.hook_pre_linear": "mlp.linear",
  "mlp.hook_post": "mlp.post",
  "mlp.hook_out": "mlp.out",
  "hook_mlp_out": "mlp.out",
  "hook_resid_post": "resid_post",
}
TL_OUTER_ALIASES = {
  "hook_embed": "embed.tok",
  "hook_pos_embed": "embed.pos",
  "ln_final.hook_normalized": "final.normed",
}


def canonical(name: str) -> str:
  """jaxsae's name for a hook given as jaxsae or TransformerLens names it (unknown names pass
  through unchanged, for the checks to report)."""
  if not isinstance(name, str):
    return name
  if name in TL_OUTER_ALIASES:
    return TL_OUTER_ALIASES[name]
  parts = name.split(".", 2)
  if len(parts) == 3 and parts[0] == "blocks" and parts[2] in TL_BLOCK_ALIASES:
    return f"blocks.{parts[1]}.{TL_BLOCK_ALIASES[parts[2]]}"
  return name


def block_sites(config) -> tuple[str, ...]:
  """The block sites of a model with this `TransformerConfig`, in forward order."""
  absent = set()
  if config.positions != "rotary":
    absent |= {"attn.rot_q", "attn.rot_k"}
  if not config.post_norms:
    absent |= {"attn.proj", "mlp.proj", "attn.post_norm_factor", "mlp.post_norm_factor"}
  if not config.gated_mlp:
    absent.add("mlp.linear")
  return tuple(site for site in BLOCK_SITES if site not in absent)


def block(layer: int, site: str) -> str:
  """The hook name of `site` (one of BLOCK_SITES) in block `layer`, e.g. blocks.3.mlp.post."""
  if site not in BLOCK_SITES:
    raise HookError(f'unknown block site "{site}"; use one of {BLOCK_SITES}')
  return f"blocks.{layer}.{site}"


def all_names(config) -> list[str]:
  """Every hook name of a model with this `TransformerConfig`, in forward order."""
  names = ["embed.tok"] + (["embed.pos"] if config.positions == "learned" else [])
  sites = block_sites(config)
  for layer in range(config.n_layers):
    names += [f"blocks.{layer}.{site}" for site in sites]
  return names + ["final.norm_factor", "final.normed", "logits"]


def blocks_needed(names: Iterable[str]) -> int | None:
  """How many blocks a forward pass must run to reach every hook in `names`; None if one of
  them lies after the blocks (the whole forward is needed)."""
  needed = 0
  for name in names:
    layer, site = parse(canonical(name))
    if layer is not None:
      needed = max(needed, layer + 1)
    elif site in ("final.norm_factor", "final.normed", "logits"):
      return None
  return needed


def parse(name: str) -> tuple[int | None, str]:
  """(layer, site) of a hook name; layer is None outside the blocks."""
  if name.startswith("blocks."):
    _, layer, site = name.split(".", 2)
    return int(layer), site
  return None, name


OUTER_NAMES = ("embed.tok", "embed.pos", "final.norm_factor", "final.normed", "logits")


def name_problem(name: str) -> str | None:
  """Why `name` cannot be a hook of any model (None if its form is valid), with the closest
  valid form; checks what needs no model: the site, and a non-negative integer layer."""
  if not isinstance(name, str):
    return f"hook {name!r} must be a string such as blocks.1.resid_post"
  name = canonical(name)
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
    edits = {canonical(name): fn for name, fn in (edits or {}).items()}
    return cls(frozenset(canonical(name) for name in capture), edits)

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
        "jaxsae.models.hooks (all_names(config) gives a model's full list)"
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
