"""Hook points: captures are the values the forward uses; edits splice, zero and replace."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_model_config
from jaxsae.errors import HookError
from jaxsae.models import hooks
from jaxsae.models import transformer as T

CFG = tiny_model_config(n_heads=3, d_head=8)


@pytest.fixture(scope="module")
def setup():
  model = T.Transformer(CFG)
  params = T.init_params(model, jax.random.key(0))
  # Nonzero biases, so recomputations below would catch a forgotten bias.
  params = jax.tree_util.tree_map_with_path(
    lambda path, p: p + 0.01 if path[-1].key == "bias" else p, params
  )
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, CFG.vocab_size)
  logits, cap = jax.jit(lambda p, t: T.run(model, p, t, capture=hooks.all_names(CFG)))(
    params, tokens
  )
  return model, params, tokens, logits, cap


def test_every_documented_hook_is_captured_with_its_documented_shape(setup):
  _, _, _, _, cap = setup
  B, L, D, H, K, F, V = 2, 12, CFG.d_model, CFG.n_heads, CFG.d_head, CFG.d_mlp, CFG.vocab_size
  shapes = {
    "resid_pre": (B, L, D),
    "attn.in": (B, L, D),
    "attn.q": (B, L, H, K),
    "attn.k": (B, L, H, K),
    "attn.v": (B, L, H, K),
    "attn.scores": (B, H, L, L),
    "attn.pattern": (B, H, L, L),
    "attn.z": (B, L, H, K),
    "attn.out": (B, L, D),
    "resid_mid": (B, L, D),
    "mlp.in": (B, L, D),
    "mlp.pre": (B, L, F),
    "mlp.post": (B, L, F),
    "mlp.out": (B, L, D),
    "resid_post": (B, L, D),
    "attn.norm_factor": (B, L, 1),
    "mlp.norm_factor": (B, L, 1),
  }
  outer = {"logits": (B, L, V), "final.norm_factor": (B, L, 1)}
  assert set(cap) == set(hooks.all_names(CFG))
  for name, value in cap.items():
    layer, site = hooks.parse(name)
    expected = shapes[site] if layer is not None else outer.get(name, (B, L, D))
    assert value.shape == expected, name
  for site in hooks.BLOCK_SITES:  # Every site is named in the module's documentation.
    assert f"blocks.{{l}}.{site} " in hooks.__doc__


def test_captures_are_the_values_the_forward_uses(setup):
  model, params, tokens, logits, cap = setup
  c = lambda s: cap[f"blocks.0.{s}"]  # noqa: E731
  atol = 1e-5
  np.testing.assert_allclose(cap["blocks.0.resid_post"], cap["blocks.1.resid_pre"], atol=0)
  np.testing.assert_allclose(c("resid_mid"), c("resid_pre") + c("attn.out"), atol=atol)
  np.testing.assert_allclose(c("resid_post"), c("resid_mid") + c("mlp.out"), atol=atol)
  np.testing.assert_allclose(
    cap["blocks.0.resid_pre"], cap["embed.tok"] + cap["embed.pos"], atol=atol
  )
  attn = params["blocks_0"]["attn"]
  q = jnp.einsum("btd,dhk->bthk", c("attn.in"), attn["query"]["kernel"]) + attn["query"]["bias"]
  np.testing.assert_allclose(c("attn.q"), q, atol=atol)
  probs = jax.nn.softmax(c("attn.scores"), axis=-1)
  np.testing.assert_allclose(c("attn.pattern"), probs, atol=atol)
  np.testing.assert_allclose(c("attn.pattern").sum(-1), 1.0, atol=atol)
  z = jnp.einsum("bhqs,bshk->bqhk", c("attn.pattern"), c("attn.v"))
  np.testing.assert_allclose(c("attn.z"), z, atol=atol)
  out = jnp.einsum("bthk,hkd->btd", c("attn.z"), attn["out"]["kernel"]) + attn["out"]["bias"]
  np.testing.assert_allclose(c("attn.out"), out, atol=atol)
  np.testing.assert_allclose(c("mlp.post"), jax.nn.gelu(c("mlp.pre"), approximate=True), atol=atol)
  unembed = cap["final.normed"] @ params["embed"]["embedding"].T
  np.testing.assert_allclose(logits, unembed, atol=atol)
  np.testing.assert_array_equal(cap["logits"], logits)


def test_identity_edits_leave_logits_bitwise_equal(setup):
  model, params, tokens, logits, _ = setup
  identity = {name: (lambda x: x) for name in hooks.all_names(CFG)}
  edited, _ = jax.jit(lambda p, t: T.run(model, p, t, edits=identity))(params, tokens)
  np.testing.assert_array_equal(np.asarray(edited), np.asarray(logits))


def test_replacing_a_site_with_its_own_capture_changes_nothing(setup):
  model, params, tokens, logits, cap = setup
  mid = cap["blocks.1.resid_mid"]
  edited, _ = T.run(model, params, tokens, edits={"blocks.1.resid_mid": lambda _: mid})
  np.testing.assert_allclose(edited, logits, atol=1e-5)


@pytest.mark.parametrize("head", [0, 2])
def test_zeroing_a_head_equals_a_model_without_it(setup, head):
  model, params, tokens, _, _ = setup
  zero_head = {"blocks.1.attn.z": lambda z: z.at[:, :, head].set(0.0)}
  ablated, cap = T.run(model, params, tokens, capture=["blocks.1.attn.z"], edits=zero_head)
  assert not np.any(cap["blocks.1.attn.z"][:, :, head])  # Capture sees the edit.
  without = jax.tree.map(lambda x: x, params)
  kernel = without["blocks_1"]["attn"]["out"]["kernel"]
  without["blocks_1"]["attn"]["out"]["kernel"] = kernel.at[head].set(0.0)
  np.testing.assert_allclose(ablated, model.apply({"params": without}, tokens), atol=1e-6)


def test_an_edit_changes_downstream_but_not_upstream_captures(setup):
  model, params, tokens, _, _ = setup
  capture = ["blocks.0.resid_post", "blocks.1.mlp.out"]
  _, cap = T.run(model, params, tokens, capture=capture)
  _, edited = T.run(
    model, params, tokens, capture=capture, edits={"blocks.1.mlp.pre": lambda x: x * 2.0}
  )
  np.testing.assert_array_equal(edited["blocks.0.resid_post"], cap["blocks.0.resid_post"])
  assert not np.allclose(edited["blocks.1.mlp.out"], cap["blocks.1.mlp.out"])


@pytest.mark.slow
def test_edits_are_differentiable_functions_of_outside_values(setup):
  model, params, tokens, _, _ = setup

  def loss(delta_D):
    edits = {"blocks.0.resid_post": lambda x: x + delta_D}
    return T.run(model, params, tokens, edits=edits)[0].mean()

  grad = jax.grad(loss)(jnp.zeros(CFG.d_model))
  assert grad.shape == (CFG.d_model,) and np.any(grad)


def test_bad_hooks_name_the_fix(setup):
  model, params, tokens, _, _ = setup
  with pytest.raises(HookError, match='did you mean "blocks.0.mlp.post"'):
    T.run(model, params, tokens, capture=["blocks.0.mlp.pots"])
  with pytest.raises(HookError, match='"blocks.7.resid_pre"'):
    T.run(model, params, tokens, edits={"blocks.7.resid_pre": lambda x: x})
  with pytest.raises(HookError, match="must return the shape it was given"):
    T.run(model, params, tokens, edits={"blocks.0.attn.z": lambda z: z[..., 0]})
  with pytest.raises(HookError, match="unknown block site"):
    hooks.block(0, "attn.zz")


def test_transformer_lens_names_are_aliases():
  assert hooks.canonical("blocks.3.hook_resid_post") == "blocks.3.resid_post"
  assert hooks.canonical("blocks.3.ln2.hook_normalized") == "blocks.3.mlp.in"
  assert hooks.canonical("blocks.3.mlp.hook_in") == "blocks.3.mlp.in"
  assert hooks.canonical("blocks.3.hook_mlp_out") == "blocks.3.mlp.out"
  assert hooks.canonical("blocks.3.attn.hook_z") == "blocks.3.attn.z"
  assert hooks.canonical("ln_final.hook_normalized") == "final.normed"
  assert hooks.canonical("blocks.3.resid_post") == "blocks.3.resid_post"  # Ours pass unchanged.
  assert hooks.name_problem("blocks.3.hook_resid_post") is None
  assert "unknown site" in hooks.name_problem("blocks.3.hook_resid_mystery")


def test_the_sites_of_a_model_follow_its_config():
  plain = hooks.all_names(CFG)
  assert "blocks.0.mlp.linear" not in plain and "blocks.0.attn.rot_q" not in plain
  assert "embed.pos" in plain
  gated = dataclasses.replace(
    CFG, positions="rotary", gated_mlp=True, post_norms=True, norm="rmsnorm", use_bias=False
  )
  names = hooks.all_names(gated)
  for name in (
    "blocks.1.mlp.linear",
    "blocks.1.attn.rot_k",
    "blocks.1.attn.proj",
    "blocks.1.mlp.proj",
  ):
    assert name in names
  assert "embed.pos" not in names
  assert names.index("blocks.1.attn.proj") < names.index("blocks.1.attn.out")


def test_blocks_needed_by_a_capture():
  assert hooks.blocks_needed(["blocks.2.resid_post", "embed.tok"]) == 3
  assert hooks.blocks_needed(["blocks.0.hook_mlp_out"]) == 1
  assert hooks.blocks_needed(["blocks.0.resid_post", "logits"]) is None
  assert hooks.blocks_needed(["embed.tok"]) == 0
