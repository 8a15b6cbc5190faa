"""The hook a published dictionary reads or writes, in jaxsae's names (`jaxsae.models.hooks`).

Sources name hooks three ways: TransformerLens names (SAELens cfg.json, circuit-tracer's
config.yaml), Hugging Face module points (Gemma Scope 2's config.json `hf_hook_point_in`), and
folder or repo names (Gemma Scope's `…-res`/`-mlp`/`-att` repos, Gemma Scope 2's `resid_post`,
`mlp_out`, `attn_out`, `transcoder` folders, sparsify's `layers.N` hookpoints). Unknown names
give None rather than a guess.

Gemma Scope's attention SAEs read the concatenated per-head outputs before W_O (TransformerLens
`attn.hook_z`, HF `self_attn.o_proj.input`), jaxsae's `attn.z` with heads flattened (d = H·K);
their "mlp_out" is after Gemma's post-feedforward norm, jaxsae's `mlp.out`.
"""

from __future__ import annotations

import re

from jaxsae.models import hooks

# Hugging Face module point (after "model.layers.{L}.") -> jaxsae site.
HF_POINTS = {
  "output": "resid_post",
  "self_attn.o_proj.input": "attn.z",
  "post_attention_layernorm.output": "attn.out",
  "pre_feedforward_layernorm.output": "mlp.in",
  "post_feedforward_layernorm.output": "mlp.out",
}
# Gemma Scope 2 folder (without "_all") -> (input site, output site or None).
GEMMA_SCOPE_2_SITES = {
  "resid_post": ("resid_post", None),
  "mlp_out": ("mlp.out", None),
  "attn_out": ("attn.z", None),
  "transcoder": ("mlp.in", "mlp.out"),
  "clt": ("mlp.in", "mlp.out"),
}
# Gemma Scope (Gemma 2) repo suffix -> (input site, output site or None).
GEMMA_SCOPE_REPOS = {
  "res": ("resid_post", None),
  "mlp": ("mlp.out", None),
  "att": ("attn.z", None),
  "transcoders": ("mlp.in", "mlp.out"),
}
# Preferred TransformerLens name of a jaxsae site, for files circuit-tracer reads.
TL_SITES = {
  "mlp.in": "mlp.hook_in",
  "mlp.out": "hook_mlp_out",
  "resid_mid": "hook_resid_mid",
  "resid_pre": "hook_resid_pre",
  "resid_post": "hook_resid_post",
  "attn.out": "hook_attn_out",
}
_LAYER = re.compile(r"layer_(\d+)")


def valid(name: str | None) -> str | None:
  """`name` in jaxsae's naming if it is a valid hook name (TransformerLens aliases mapped)."""
  if not name:
    return None
  name = hooks.canonical(name)
  return None if hooks.name_problem(name) else name


def from_hf_point(point: str | None) -> str | None:
  """blocks.L.<site> for a Hugging Face module point such as model.layers.9.output."""
  m = re.fullmatch(r"(?:model\.)?(?:language_model\.)?layers\.(\d+)\.(.+)", point or "")
  if not m or m.group(2) not in HF_POINTS:
    return None
  return f"blocks.{m.group(1)}.{HF_POINTS[m.group(2)]}"


def layer_in(text: str) -> int | None:
  m = _LAYER.search(text)
  return int(m.group(1)) if m else None


def to_hf_point(hook: str | None) -> str | None:
  """model.layers.L.<point> for a jaxsae hook whose site HF_POINTS names (else None)."""
  m = re.fullmatch(r"blocks\.(\d+)\.(.+)", hooks.canonical(hook) if hook else "")
  points = {site: point for point, site in HF_POINTS.items()}
  if not m or m.group(2) not in points:
    return None
  return f"model.layers.{m.group(1)}.{points[m.group(2)]}"


def gemma_scope_2(folder: str) -> tuple[str | None, str | None, str | None]:
  """(input hook, output hook, site folder) from a path holding e.g.
  resid_post_all/layer_9_width_16k_l0_small."""
  parts = folder.replace("\\", "/").split("/")
  for i, part in enumerate(parts):
    site = part.removesuffix("_all")
    if site in GEMMA_SCOPE_2_SITES and i + 1 < len(parts):
      layer = layer_in(parts[i + 1])
      if layer is not None:
        src, dst = GEMMA_SCOPE_2_SITES[site]
        return f"blocks.{layer}.{src}", dst and f"blocks.{layer}.{dst}", site
  return None, None, None


def gemma_scope_repo(text: str) -> tuple[str | None, str | None]:
  """(model, repo kind) from a repo id or cache path naming google/gemma-scope-2b-pt-res etc."""
  m = re.search(r"gemma-scope-(\d+b)-(pt|it)-(res|mlp|att|transcoders)\b", text)
  if not m:
    return None, None
  size, tuning, kind = m.groups()
  return f"gemma-2-{size}" + ("-it" if tuning == "it" else ""), kind


def gemma_scope(text: str, repo_kind: str | None) -> tuple[str | None, str | None]:
  """(input hook, output hook) of a Gemma Scope (Gemma 2) params.npz at path `text`."""
  if repo_kind is None:
    return None, None
  if "embedding" in text and repo_kind == "res":
    return "embed.tok", None
  layer = layer_in(text)
  if layer is None:
    return None, None
  src, dst = GEMMA_SCOPE_REPOS[repo_kind]
  return f"blocks.{layer}.{src}", dst and f"blocks.{layer}.{dst}"


def from_sparsify_hookpoint(name: str) -> str | None:
  """blocks.N.resid_post for a sparsify hookpoint naming a decoder layer's output
  (layers.N, model.layers.N, h.N, transformer.h.N, gpt_neox.layers.N); None otherwise."""
  m = re.fullmatch(r"(?:model\.|transformer\.|gpt_neox\.)?(?:layers|h)\.(\d+)", name)
  return f"blocks.{m.group(1)}.resid_post" if m else None


def to_tl_site(hook: str | None) -> str | None:
  """The TransformerLens name inside a block ("mlp.hook_in") of a jaxsae hook, for
  circuit-tracer's config.yaml; None when it has none."""
  if not hook or not hook.startswith("blocks."):
    return None
  return TL_SITES.get(hook.split(".", 2)[2])


def from_sparsify_transcoder(name: str) -> tuple[str | None, str | None]:
  """(input, output) hooks of a sparsify transcoder, which reads a module's input and predicts
  its output: layers.N.mlp -> (blocks.N.mlp.in, blocks.N.mlp.out), layers.N -> (blocks.N.resid_pre,
  blocks.N.resid_post); (None, None) otherwise. On post-norm models (Gemma 2, 3) the HF mlp
  module's output is before the post-feedforward norm: jaxsae's mlp.proj, not mlp.out."""
  m = re.fullmatch(r"(?:model\.|transformer\.|gpt_neox\.)?(?:layers|h)\.(\d+)(\.mlp)?", name)
  if not m:
    return None, None
  layer = m.group(1)
  if m.group(2):
    return f"blocks.{layer}.mlp.in", f"blocks.{layer}.mlp.out"
  return f"blocks.{layer}.resid_pre", f"blocks.{layer}.resid_post"
