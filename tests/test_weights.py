"""jaxsae.models.weights against the forward pass of every family switch, and its readers
(circuits, edges, the sparsity projection, SmoothQuant, fake quantization) on gated GQA models."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_model_config
from jaxsae.errors import JaxsaeError
from jaxsae.models import qk_ov_circuits, weights
from jaxsae.models import transformer as T
from jaxsae.models.language_model import LanguageModel
from jaxsae.quant import fake_quant, linear_inputs, smoothing
from jaxsae.quant import stats as stats_lib
from jaxsae.sparse import edges, nodes, sparsity_stats, study
from jaxsae.sparse import projection as P
from jaxsae.text.tokenizer import ByteTokenizer

GPT2 = tiny_model_config()
LLAMA = tiny_model_config(
  norm="rmsnorm",
  use_bias=False,
  gated_mlp=True,
  n_kv_heads=1,
  activation="silu",
  positions="rotary",
)
QWEN = tiny_model_config(
  norm="rmsnorm", use_bias=False, qkv_bias=True, gated_mlp=True, n_heads=4, n_kv_heads=2,
  activation="silu", positions="rotary",
)  # fmt: skip
GEMMA = tiny_model_config(
  norm="rmsnorm", use_bias=False, gated_mlp=True, n_heads=4, n_kv_heads=2, activation="gelu",
  norm_scale_offset=1.0, post_norms=True, qk_norm=True, positions="rotary", embed_scale=True,
)  # fmt: skip
CONFIGS = {"gpt2": GPT2, "llama_mqa": LLAMA, "qwen_gqa_bias": QWEN, "gemma_gqa": GEMMA}
ACT = {"gelu": lambda x: jax.nn.gelu(x, approximate=True), "silu": jax.nn.silu}


def random_params(config, seed=0):
  """init_params with every norm's applied gain in [0.5, 1.5] (its stored scale is the gain
  minus the offset, so an accessor ignoring the offset is off by 1) and biases nonzero."""
  params = T.init_params(T.Transformer(config), jax.random.key(seed))
  rng = np.random.default_rng(seed)
  offset = weights.norm_offset(config)

  def perturb(path, p):
    name = path[-1].key
    if name == "scale":
      return jnp.asarray(rng.uniform(0.5, 1.5, p.shape) - offset, jnp.float32)
    if name == "bias":
      return jnp.asarray(0.1 * rng.normal(size=p.shape), jnp.float32)
    return p

  return jax.tree_util.tree_map_with_path(perturb, params)


def tokens_for(config, seed=0, batch=2):
  rng = np.random.default_rng(seed)
  return rng.integers(0, config.vocab_size, (batch, config.max_len)).astype(np.int32)


def normalize(x, config, norm, eps=None):
  """What `norm` (a weights.Norm) does to x over the last axis."""
  eps = config.norm_eps if eps is None else eps
  x = x.astype(jnp.float32)
  if config.norm == "layernorm":
    x = x - x.mean(-1, keepdims=True)
  y = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + eps)
  return y * norm.gain + (0 if norm.bias is None else norm.bias)


def affine(x, w, b, spec):
  out = jnp.einsum(spec, x, w)
  return out if b is None else out + b


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.slow
def test_the_accessor_reproduces_the_forward_pass(name):
  config = CONFIGS[name]
  params = random_params(config)
  sites = ["resid_pre", "attn.in", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z"]
  sites += ["attn.proj"] if config.post_norms else []
  sites += ["attn.out", "resid_mid", "mlp.in", "mlp.pre", "mlp.post", "mlp.out"]
  sites += ["mlp.linear"] if config.gated_mlp else []
  sites += ["mlp.proj"] if config.post_norms else []
  _, cap = T.run(
    T.Transformer(config), params, tokens_for(config), capture=[f"blocks.1.{s}" for s in sites]
  )
  c = {s: cap[f"blocks.1.{s}"] for s in sites}
  w = weights.layer_weights(params, 1, config)
  H, G, K = config.n_heads, config.kv_heads, config.d_head
  assert (w.n_heads, w.kv_heads) == (H, G)
  assert w.W_K.shape == w.W_V.shape == (config.d_model, G, K)
  assert w.W_K_per_head.shape == (config.d_model, H, K)
  assert (w.W_gate is not None) == config.gated_mlp
  assert (w.attn_post_norm is not None) == (w.mlp_post_norm is not None) == config.post_norms
  assert (w.q_norm is not None) == (w.k_norm is not None) == config.qk_norm
  assert (w.b_K is not None) == (config.use_bias or config.qkv_bias)
  tol = dict(rtol=2e-4, atol=2e-5)

  np.testing.assert_allclose(normalize(c["resid_pre"], config, w.attn_norm), c["attn.in"], **tol)
  q = affine(c["attn.in"], w.W_Q, w.b_Q, "btd,dhk->bthk")
  k = affine(c["attn.in"], w.W_K, w.b_K, "btd,dgk->btgk")
  if config.qk_norm:
    q, k = normalize(q, config, w.q_norm), normalize(k, config, w.k_norm)
  np.testing.assert_allclose(q, c["attn.q"], **tol)
  np.testing.assert_allclose(k, c["attn.k"], **tol)
  np.testing.assert_allclose(
    affine(c["attn.in"], w.W_V, w.b_V, "btd,dgk->btgk"), c["attn.v"], **tol
  )
  # Per query head: z_h = pattern_h @ v of the KV head h // (H / G).
  b_V = None if w.b_V is None else weights.expand_kv_heads(w.b_V, H)
  v_heads = affine(c["attn.in"], w.W_V_per_head, b_V, "btd,dhk->bthk")
  z = jnp.einsum("bhts,bshk->bthk", c["attn.pattern"], v_heads)
  np.testing.assert_allclose(z, c["attn.z"], **tol)
  proj = affine(c["attn.z"], w.W_O, w.b_O, "bthk,hkd->btd")
  if config.post_norms:
    np.testing.assert_allclose(proj, c["attn.proj"], **tol)
    proj = normalize(proj, config, w.attn_post_norm)
  np.testing.assert_allclose(proj, c["attn.out"], **tol)

  np.testing.assert_allclose(normalize(c["resid_mid"], config, w.mlp_norm), c["mlp.in"], **tol)
  linear = affine(c["mlp.in"], w.W_in, w.b_in, "btd,df->btf")
  if config.gated_mlp:
    pre = affine(c["mlp.in"], w.W_gate, w.b_gate, "btd,df->btf")
    np.testing.assert_allclose(linear, c["mlp.linear"], **tol)
    post = ACT[config.activation](pre) * linear
  else:
    pre = linear
    post = ACT[config.activation](pre)
  np.testing.assert_allclose(pre, c["mlp.pre"], **tol)
  np.testing.assert_allclose(post, c["mlp.post"], **tol)
  out = affine(c["mlp.post"], w.W_out, w.b_out, "btf,fd->btd")
  if config.post_norms:
    np.testing.assert_allclose(out, c["mlp.proj"], **tol)
    out = normalize(out, config, w.mlp_post_norm)
  np.testing.assert_allclose(out, c["mlp.out"], **tol)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_paths_roles_and_neuron_axes(name):
  config = CONFIGS[name]
  params = random_params(config)
  expected = ["W_Q", "W_K", "W_V", "W_O", "W_in"] + (["W_gate"] if config.gated_mlp else [])
  assert weights.roles(params, 0) == (*expected, "W_out")
  assert weights.kernel_path(1, "W_gate") == ("blocks_1", "mlp", "fc_gate", "kernel")
  assert weights.norm_path(0, "q_norm") == ("blocks_0", "attn", "q_norm")
  assert weights.role_at(("blocks_12", "attn", "value", "bias")) == (12, "W_V", "bias")
  assert weights.role_at(("blocks_0", "attn", "q_norm", "scale")) is None
  assert weights.role_at(("embed", "embedding")) is None
  # The neuron axes of each kernel span the channels of the site it writes or reads.
  H, G, K, F = config.n_heads, config.kv_heads, config.d_head, config.d_mlp
  width = {
    "W_Q": H * K,
    "W_K": G * K,
    "W_V": G * K,
    "W_O": H * K,
    "W_in": F,
    "W_gate": F,
    "W_out": F,
  }
  w = weights.layer_weights(params, 0, config)
  for role, kernel in w.kernels().items():
    axes = weights.LINEARS[role].neuron_axes
    assert math.prod(kernel.shape[a] for a in axes) == width[role], role
    assert weights.get_leaf(params, weights.kernel_path(0, role)) is kernel
  for site, role in (("attn.k", "W_K"), ("attn.v", "W_V"), ("attn.q", "W_Q"), ("mlp.post", "W_in")):
    assert nodes.site_width(config, f"blocks.0.{site}") == width[role]
  # Writing through a path; a stored scale is the gain minus the offset.
  tree = jax.tree_util.tree_map(np.asarray, params)
  weights.set_leaf(tree, weights.kernel_path(0, "W_out"), np.zeros((F, config.d_model)))
  assert not weights.layer_weights(tree, 0, config).W_out.any()
  norm = weights.layer_weights(params, 0, config).mlp_norm
  stored = params["blocks_0"]["mlp_norm"]["scale"]
  np.testing.assert_allclose(norm.gain, stored + weights.norm_offset(config))
  np.testing.assert_allclose(norm.scale_for(norm.gain), stored, atol=1e-7)


CIRCUIT = dataclasses.replace(GEMMA, positions="none")


@pytest.mark.slow
def test_circuits_of_a_gqa_qk_norm_post_norm_model_reproduce_its_scores_and_outputs():
  """W_QK and W_OV (gains folded: pre-norm, QK-norm with offset, post-norm) give the forward's
  scores and attention outputs up to the normalization scalars they ignore, computed here."""
  params = random_params(CIRCUIT, seed=3)
  names = ["attn.in", "attn.scores", "attn.pattern", "attn.proj", "attn.out"]
  tokens = tokens_for(CIRCUIT, batch=1)[:, :12]
  _, cap = T.run(T.Transformer(CIRCUIT), params, tokens, capture=[f"blocks.1.{s}" for s in names])
  c = {s: cap[f"blocks.1.{s}"][0] for s in names}
  w = weights.layer_weights(params, 1, CIRCUIT)
  H = CIRCUIT.n_heads
  normed = c["attn.in"] / w.attn_norm.gain  # The norm's output before its gain.
  rms = lambda x: jnp.sqrt(jnp.mean(x * x, -1) + CIRCUIT.norm_eps)  # noqa: E731
  rms_q = rms(jnp.einsum("td,dhk->thk", c["attn.in"], w.W_Q))  # (T, H)
  rms_k = weights.expand_kv_heads(rms(jnp.einsum("td,dgk->tgk", c["attn.in"], w.W_K)).T, H, 0)
  qk = qk_ov_circuits.qk_matrices(params, 1, config=CIRCUIT)
  scores = jnp.einsum("qd,hde,se->hqs", normed, qk, normed)
  scores = scores / (rms_q.T[:, :, None] * rms_k[:, None, :]) / math.sqrt(CIRCUIT.d_head)
  causal = np.tril(np.ones((12, 12), bool))
  np.testing.assert_allclose(
    np.where(causal, scores, 0), np.where(causal, c["attn.scores"], 0), rtol=2e-4, atol=2e-5
  )
  # Forgetting the offset (gain = stored w) breaks it: the test sees the offset.
  bare = qk_ov_circuits.qk_matrices(params, 1)
  assert not np.allclose(bare, qk, rtol=1e-2)
  ov = qk_ov_circuits.ov_matrices(params, 1, config=CIRCUIT)
  out = jnp.einsum("hqs,sd,hde->qe", c["attn.pattern"], normed, ov)
  expected = c["attn.out"] * rms(c["attn.proj"])[:, None]  # The post-norm's scalar undone.
  np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-5)
  scores = np.asarray(qk_ov_circuits.composition_scores(params, CIRCUIT, "k"))
  assert scores.shape == (2, H, 2, H) and np.all(scores[0, :, 1] > 0)


def test_qk_circuits_of_a_rotary_model_are_refused_and_ov_ones_are_not():
  params = random_params(GEMMA)
  with pytest.raises(JaxsaeError, match="rotary positions.*no single QK circuit"):
    qk_ov_circuits.qk_matrices(params, 0, config=GEMMA)
  for kind in ("q", "k"):
    with pytest.raises(JaxsaeError, match="rotary"):
      qk_ov_circuits.composition_scores(params, GEMMA, kind)
  with pytest.raises(JaxsaeError, match="rotary"):
    qk_ov_circuits.qk_circuit(params, GEMMA, 0, tokens=[1, 2])
  v = np.asarray(qk_ov_circuits.composition_scores(params, GEMMA, "v"))
  assert v.shape == (2, 4, 2, 4) and np.all(v[0, :, 1] > 0)
  assert qk_ov_circuits.ov_circuit(params, GEMMA, 1, tokens=[1, 2, 3]).shape == (4, 3, 3)


def random_lm(config, seed=0):
  """Every weight random at scale 0.3 (so the activations have uneven channels); norm gains as
  in random_params."""
  params = random_params(config, seed)
  rng = np.random.default_rng(seed + 1)
  params = jax.tree_util.tree_map_with_path(
    lambda path, p: (
      p
      if path[-1].key in ("scale", "bias")
      else jnp.asarray(0.3 * rng.normal(size=p.shape), jnp.float32)
    ),
    params,
  )
  return LanguageModel(config, params, ByteTokenizer())


@pytest.mark.parametrize("name", ["gemma_gqa", "qwen_gqa_bias"])
@pytest.mark.slow
def test_smoothquant_folds_leave_a_gated_gqa_model_unchanged(name):
  config = CONFIGS[name]
  lm = random_lm(config)
  tokens = tokens_for(config, batch=4)
  stats = stats_lib.channel_stats(lm, tokens, progress=False)
  sites = ("attn.in", "mlp.in", "attn.z")
  params, scales = smoothing.smooth(lm.params, config, stats, 0.5, sites)
  assert all(np.ptp(s) > 0.1 for s in scales.values())  # Real, uneven rescaling.
  before, _ = lm.run(tokens)
  after, _ = dataclasses.replace(lm, params=params).run(tokens)
  np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=0, atol=1e-4)
  old, new = weights.layer_weights(lm.params, 0, config), weights.layer_weights(params, 0, config)
  # mlp.in: both the gate's and the linear branch's rows carry s; the gain is divided by s.
  s = scales["blocks.0.mlp.in"]
  for role in ("W_in", "W_gate"):
    np.testing.assert_allclose(new.kernels()[role], old.kernels()[role] * s[:, None], rtol=1e-6)
  np.testing.assert_allclose(new.mlp_norm.gain, old.mlp_norm.gain / s, rtol=1e-5)
  w_max = linear_inputs.weight_channel_absmax(lm.params, 0, "mlp.in")
  both = np.maximum(np.abs(old.W_in).max(1), np.abs(old.W_gate).max(1))
  np.testing.assert_allclose(w_max, both, rtol=1e-6)
  # attn.z: one scale per KV-head channel, shared by the group's query heads.
  H, G, K = config.n_heads, config.kv_heads, config.d_head
  s_z = scales["blocks.0.attn.z"].reshape(G, H // G, K)
  assert np.all(s_z == s_z[:, :1]) and np.ptp(s_z) > 0.1
  # The smoothed inputs are the old ones divided by s.
  derived = smoothing.smoothed_stats(stats, scales)
  again = stats_lib.channel_stats(lm, tokens, params=params, progress=False)
  for hook in scales:
    expected = derived.absmax[hook]
    np.testing.assert_allclose(
      again.absmax[hook], expected, rtol=1e-4, atol=1e-5 * expected.max(), err_msg=hook
    )
  # Scales that differ within a KV group cannot be folded into W_V.
  uneven = np.ones(H * K, np.float32)
  uneven[0] = 2.0  # Query head 0 only; head 1 shares its KV head.
  with pytest.raises(JaxsaeError, match="must share one scale"):
    smoothing.fold_scales(lm.params, config, {"blocks.0.attn.z": uneven})


@pytest.mark.slow
def test_fake_quantization_quantizes_the_gate():
  lm = random_lm(GEMMA)
  quantized = fake_quant.quantize_weights(lm.params, GEMMA.n_layers)
  for layer in range(GEMMA.n_layers):
    old = weights.layer_weights(lm.params, layer, GEMMA)
    new = weights.layer_weights(quantized, layer, GEMMA)
    assert set(new.kernels()) == set(weights.ROLES)
    for role, kernel in old.kernels().items():
      q = np.asarray(new.kernels()[role])
      assert not np.array_equal(q, kernel), role
      step = np.abs(kernel).max(axis=tuple(range(weights.LINEARS[role].input_axes))) / 127
      np.testing.assert_allclose(q / step, np.round(q / step), atol=1e-3, err_msg=role)
    np.testing.assert_array_equal(new.q_norm.gain, old.q_norm.gain)


@pytest.mark.slow
def test_projection_edges_and_density_see_the_gate_and_kv_heads():
  config = QWEN
  params = jax.tree_util.tree_map(np.array, random_params(config))
  H, G, K, F = config.n_heads, config.kv_heads, config.d_head, config.d_mlp
  assert P.matrix_kind("blocks_0/mlp/fc_gate/kernel") == P.HIDDEN
  assert P.neuron_axes("blocks_0/mlp/fc_gate/kernel") == (1,)
  projected = P.project(params, {P.HIDDEN: 0.25, P.EMBEDDING: 0.5}, P.SparsityConfig(0.25, 0.5))
  gate = np.asarray(projected["blocks_1"]["mlp"]["fc_gate"]["kernel"])
  assert np.count_nonzero(gate) == round(0.25 * gate.size)
  assert np.all(np.count_nonzero(gate, axis=0) >= 4)  # The per-neuron floor, per gate column.

  b0 = params["blocks_0"]
  b0["mlp"]["fc_gate"]["kernel"][:, 3] = 0.0  # Neuron 3 has no gate: dead.
  b0["attn"]["key"]["kernel"][:, 1, 5] = 0.0  # KV channel (1, 5): dead for query heads 2, 3.
  b0["attn"]["value"]["kernel"][:, 0, 2] = 0.0  # KV channel (0, 2): dead for query heads 0, 1.
  stats = sparsity_stats.nonzero_stats(params)
  assert int(stats["dead_neurons/blocks_0/mlp"]) == 1
  assert int(stats["dead_neurons/blocks_0/attn_qk"]) == H // G
  assert int(stats["dead_neurons/blocks_0/attn_ov"]) == H // G
  assert int(stats["dead_slices/blocks_0/mlp/fc_gate/kernel"]) == 1

  counts = edges.count_edges(params, config, {})
  n = lambda role: sum(  # noqa: E731
    int(np.count_nonzero(weights.get_leaf(params, weights.kernel_path(layer, role))))
    for layer in range(config.n_layers)
  )
  assert counts["mlp.gate"] == n("W_gate") and counts["mlp.in"] == n("W_in")
  assert counts["qkv"] == n("W_Q") + n("W_K") + n("W_V")
  assert counts["v->z"] == config.n_layers * H * K  # Each z channel reads one v channel.
  kept = {s: np.zeros(nodes.site_width(config, s), bool) for s in nodes.node_sites(config)}
  kept["blocks.0.attn.v"][1 * K + 7] = True  # KV head 1, dim 7...
  kept["blocks.0.attn.z"][:] = True
  v_to_z = [e for e in edges.edge_list(params, config, kept) if e.kind == "v->z"]
  assert sorted(e.dst_channel for e in v_to_z) == [2 * K + 7, 3 * K + 7]  # ...feeds heads 2, 3.
  assert all(e.weight == 1.0 for e in v_to_z)

  lm = LanguageModel(config, params, ByteTokenizer())
  D, L = config.d_model, config.n_layers
  total = L * (2 * D * H * K + 2 * D * G * K + 3 * D * F)  # Q, O; K, V; in, gate, out.
  gates = [params[f"blocks_{i}"]["mlp"]["fc_gate"]["kernel"] for i in range(L)]
  dense = study.hidden_density(lm)
  for gate in gates:
    lost = np.count_nonzero(gate)
    gate[...] = 0.0
    assert study.hidden_density(lm) == pytest.approx(dense - lost / total)
    dense = study.hidden_density(lm)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_projection_knows_every_parameter_of_every_family(name):
  config = CONFIGS[name]
  leaves = jax.tree_util.tree_flatten_with_path(T.param_shapes(T.Transformer(config)))[0]
  hidden = {
    P.path_name(path) for path, x in leaves if P.matrix_kind(path, len(x.shape)) == P.HIDDEN
  }
  expected = {
    "/".join(weights.kernel_path(i, r)) for i in range(config.n_layers) for r in weights.ROLES
  }
  if not config.gated_mlp:
    expected = {p for p in expected if "fc_gate" not in p}
  assert hidden == expected


def test_a_parallel_blocks_attention_is_not_read_by_its_own_mlp():
  sequential = tiny_model_config(positions="rotary", norm="rmsnorm", use_bias=False)
  parallel = dataclasses.replace(sequential, parallel_block=True)
  params = random_params(sequential)
  w_o = [np.count_nonzero(weights.layer_weights(params, i).W_O) for i in range(2)]
  # Readers of layer 0's attention: (mlp.in 0,) attn.in 1, mlp.in 1, final; of layer 1's: (mlp.in 1,) final.
  assert edges.count_edges(params, sequential, {})["attn->resid"] == 4 * w_o[0] + 2 * w_o[1]
  assert edges.count_edges(params, parallel, {})["attn->resid"] == 3 * w_o[0] + 1 * w_o[1]
