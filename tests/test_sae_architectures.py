"""Every architecture's encode and loss terms against their formulas, computed here in numpy,
and the reference's known mistakes of other libraries as regression tests."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import sae_helpers

from jaxsae.errors import ConfigError
from jaxsae.sae import registry
from jaxsae.sae.base import Hyper
from jaxsae.sae.config import SAEConfig

D, N, BATCH = 8, 32, 16


def make(architecture, **overrides):
  """A module, perturbed parameters (so that no bias is trivially zero) and a batch."""
  return sae_helpers.perturbed_dictionary(
    architecture, d_in=D, n_latents=N, batch=BATCH, **overrides
  )


def numpy_params(variables):
  return {k: np.asarray(v, np.float64) for k, v in variables["params"].items()}


def recon_error(x, x_hat):
  return np.mean(np.sum((x - x_hat) ** 2, -1)) / x.shape[-1]


def topk_np(pre, k):
  z = np.zeros_like(pre)
  idx = np.argsort(-pre, axis=-1)[:, :k]
  np.put_along_axis(z, idx, np.maximum(np.take_along_axis(pre, idx, -1), 0), -1)
  return z


def loss_of(sae, variables, x, dead=None, **kw):
  dead = jnp.zeros(N, bool) if dead is None else dead
  return sae.apply(variables, x, Hyper.of(sae.config), dead, method="loss", **kw)


@pytest.mark.slow
def test_topk_encode_decode_and_reconstruction_term():
  sae, v, x = make("topk", k_aux=0)
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  pre = (xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
  z = topk_np(pre, 4)
  enc = sae.apply(v, x, method="encode")
  np.testing.assert_allclose(enc.latents, z, atol=1e-5)
  np.testing.assert_allclose(enc.pre, pre, atol=1e-5)
  out = loss_of(sae, v, x)
  x_hat = z @ p["W_dec"] + p["b_dec"]
  np.testing.assert_allclose(out.terms["reconstruction"], recon_error(xn, x_hat), rtol=1e-5)
  assert set(out.terms) == {"reconstruction"}
  np.testing.assert_allclose(out.total, out.terms["reconstruction"])


def test_aux_k_matches_the_formula_without_b_dec():
  """Known mistakes 1 and 2: ê = z_aux W_dec (no b_dec), normalized by ‖e − ē‖²."""
  sae, v, x = make("topk", k_aux=3, aux_alpha=0.5)
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  dead = np.arange(N) % 4 == 0
  pre = (xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
  x_hat = topk_np(pre, 4) @ p["W_dec"] + p["b_dec"]
  e = xn - x_hat
  z_aux = topk_np(np.where(dead, pre, -np.inf), 3)
  e_hat = z_aux @ p["W_dec"]
  expected = np.sum((e - e_hat) ** 2) / np.sum((e - e.mean(0)) ** 2)
  with_b_dec = np.sum((e - e_hat - p["b_dec"]) ** 2) / np.sum((e - e.mean(0)) ** 2)
  assert abs(expected - with_b_dec) > 1e-2  # The test can tell the two apart.
  out = loss_of(sae, v, x, jnp.asarray(dead))
  np.testing.assert_allclose(out.stats["aux_k_loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(out.terms["aux_k"], 0.5 * expected, rtol=1e-5)
  assert int(out.stats["dead"]) == dead.sum()


def test_aux_k_is_zero_without_dead_latents():
  sae, v, x = make("topk")
  out = loss_of(sae, v, x)
  assert float(out.terms["aux_k"]) == 0.0


def test_aux_k_stops_the_gradient_through_the_residual():
  """Known mistake 2: e = sg(x − x̂), so live latents' decoder rows get no AuxK gradient."""
  sae, v, x = make("topk", k_aux=3)
  dead = jnp.arange(N) % 4 == 0

  def aux(params):
    return loss_of(sae, {**v, "params": params}, x, dead).terms["aux_k"]

  grads = jax.grad(aux)(v["params"])
  live_rows = np.asarray(grads["W_dec"])[~np.asarray(dead)]
  np.testing.assert_array_equal(live_rows, 0.0)
  assert np.abs(np.asarray(grads["W_dec"])[np.asarray(dead)]).sum() > 0


def test_multi_topk_adds_an_eighth_of_the_4k_error_and_counts_only_the_k_set():
  """Known mistake 6: dead statistics count the k-set only."""
  sae, v, x = make("topk", multi_topk=True, k_aux=0)
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  pre = (xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
  x_hat4 = topk_np(pre, 16) @ p["W_dec"] + p["b_dec"]
  out = loss_of(sae, v, x)
  np.testing.assert_allclose(out.terms["multi_topk"], recon_error(xn, x_hat4) / 8, rtol=1e-5)
  fired_expected = (topk_np(pre, 4) > 1e-3).sum(0)
  np.testing.assert_array_equal(out.stats["fired"], fired_expected)


def test_matryoshka_sums_the_errors_of_nested_prefixes():
  sae, v, x = make("topk", matryoshka=(8, 16), k_aux=0)
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  pre = (xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
  z = topk_np(pre, 4)
  expected = sum(recon_error(xn, z[:, :m] @ p["W_dec"][:m] + p["b_dec"]) for m in (8, 16, N))
  out = loss_of(sae, v, x)
  np.testing.assert_allclose(out.terms["reconstruction"], expected, rtol=1e-5)


@pytest.mark.parametrize("decoder_norm", ["penalty", "unit"])
def test_relu_l1_penalty(decoder_norm):
  sae, v, x = make("relu", decoder_norm=decoder_norm)
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  z = np.maximum((xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 0)
  norms = np.linalg.norm(p["W_dec"], axis=-1) if decoder_norm == "penalty" else 1.0
  out = loss_of(sae, v, x)
  np.testing.assert_allclose(out.terms["sparsity"], 0.3 * np.mean(np.sum(z * norms, -1)), rtol=1e-5)
  np.testing.assert_allclose(
    out.terms["reconstruction"], recon_error(xn, z @ p["W_dec"] + p["b_dec"]), rtol=1e-5
  )


@pytest.mark.parametrize("architecture", ["relu", "gated", "prolu_relu"])
def test_centered_matmul_has_the_formulas_values_and_b_dec_gradient(architecture):
  """The encoder takes b_dec's gradient as one vector-matrix product (`centered_matmul`)."""
  sae, v, x = make(architecture)
  W, b = v["params"]["W_enc"], v["params"]["b_dec"]

  def trick(b):
    return sae.apply({**v, "params": {**v["params"], "b_dec": b}}, x, W, method="centered_matmul")

  def formula(b):
    return (x - b) @ W

  np.testing.assert_allclose(trick(b), formula(b), rtol=1e-6, atol=1e-6)
  g = jax.random.normal(jax.random.key(5), (BATCH, N))
  got, want = jax.vjp(trick, b)[1](g)[0], jax.vjp(formula, b)[1](g)[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_relu_gradients_equal_autodiff_of_the_plain_formula():
  sae, v, x = make("relu")  # decoder_norm auto = penalty: λ Σ |z_i| ‖w_i‖

  def ours(params):
    return sae.apply({**v, "params": params}, x, method="loss").total

  def plain(p):
    z = jax.nn.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])
    x_hat = z @ p["W_dec"] + p["b_dec"]
    l1 = jnp.sum(z * jnp.linalg.norm(p["W_dec"], axis=-1), -1)
    return jnp.mean(jnp.sum((x - x_hat) ** 2, -1)) / D + 0.3 * jnp.mean(l1)

  np.testing.assert_allclose(ours(v["params"]), plain(v["params"]), rtol=1e-6)
  got, want = jax.grad(ours)(v["params"]), jax.grad(plain)(v["params"])
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_gated_encode_and_loss_terms():
  sae, v, x = make("gated")
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  centered = xn - p["b_dec"]
  pi_gate = centered @ p["W_enc"] + p["b_gate"]
  pi_mag = centered @ (p["W_enc"] * np.exp(p["r_mag"])) + p["b_mag"]
  z = (pi_gate > 0) * np.maximum(pi_mag, 0)
  np.testing.assert_allclose(sae.apply(v, x, method="encode").latents, z, atol=1e-5)
  out = loss_of(sae, v, x)
  gate_acts = np.maximum(pi_gate, 0)
  np.testing.assert_allclose(out.terms["sparsity"], 0.3 * np.mean(gate_acts.sum(-1)), rtol=1e-5)
  aux = recon_error(xn, gate_acts @ p["W_dec"] + p["b_dec"])
  np.testing.assert_allclose(out.terms["gate_aux"], aux, rtol=1e-5)


def test_gated_aux_term_stops_gradients_into_the_decoder():
  """Known mistake 4: the aux reconstruction uses sg(W_dec) and sg(b_dec)."""
  sae, v, x = make("gated")
  grads = jax.grad(lambda p: loss_of(sae, {**v, "params": p}, x).terms["gate_aux"])(v["params"])
  np.testing.assert_array_equal(grads["W_dec"], 0.0)
  assert np.abs(np.asarray(grads["b_gate"])).sum() > 0
  # b_dec reaches the aux term only through the encoder's centering, not as the decoder bias.
  pr = v["params"]
  fixed_w, fixed_b = pr["W_dec"], pr["b_dec"]

  def reference(b_dec):
    gate = jax.nn.relu((x - b_dec) @ pr["W_enc"] + pr["b_gate"])
    return jnp.mean(jnp.sum((x - gate @ fixed_w - fixed_b) ** 2, -1)) / D

  np.testing.assert_allclose(grads["b_dec"], jax.grad(reference)(pr["b_dec"]), rtol=1e-4)


@pytest.mark.parametrize("architecture", ["prolu_relu", "prolu_ste"])
def test_prolu_encode_and_penalties(architecture):
  sae, v, x = make(architecture)
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  m = (xn - p["b_dec"]) @ p["W_enc"]
  z = m * (m > 0) * (m + p["b_enc"] > 0)
  np.testing.assert_allclose(sae.apply(v, x, method="encode").latents, z, atol=1e-5)
  out = loss_of(sae, v, x)
  np.testing.assert_allclose(out.terms["sparsity"], 0.3 * np.mean(z.sum(-1)), rtol=1e-5)
  sae2, _, _ = make(architecture, prolu_penalty="sqrt_l1")
  out2 = sae2.apply(v, x, Hyper.of(sae2.config), jnp.zeros(N, bool), method="loss")
  np.testing.assert_allclose(out2.terms["sparsity"], 0.3 * np.mean(np.sqrt(z).sum(-1)), rtol=1e-5)


def test_prolu_variants_differ_only_in_gradients():
  relu, v, x = make("prolu_relu")
  ste, _, _ = make("prolu_ste")
  a = loss_of(relu, v, x).total
  b = loss_of(ste, v, x).total
  np.testing.assert_allclose(a, b)
  ga = jax.grad(lambda p: loss_of(relu, {**v, "params": p}, x).total)(v["params"])
  gb = jax.grad(lambda p: loss_of(ste, {**v, "params": p}, x).total)(v["params"])
  assert np.abs(np.asarray(ga["W_enc"]) - np.asarray(gb["W_enc"])).max() > 1e-4


def test_jumprelu_l0_penalty_acts_on_pre_activations():
  """Known mistake 5: the step is applied to pre, and θ is float32."""
  sae, v, x = make("jumprelu")
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  assert v["params"]["threshold"].dtype == jnp.float32
  pre = (xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
  z = pre * (pre > p["threshold"])
  np.testing.assert_allclose(sae.apply(v, x, method="encode").latents, z, atol=1e-5)
  out = loss_of(sae, v, x)
  l0 = np.mean((pre > p["threshold"]).sum(-1))
  np.testing.assert_allclose(out.terms["sparsity"], 0.3 * l0, rtol=1e-5)
  np.testing.assert_allclose(out.stats["l0"], l0, rtol=1e-5)


def test_jumprelu_target_penalty_is_quadratic_around_k_with_the_step_gradient():
  """Gemma Scope 2's penalty on SAELens's scale over d: (λ/d)·mean_t (2/k)(L0_t − k)²; its
  θ-gradient is the step's pseudo-derivative times the per-token factor (λ/d)(4/k)(L0_t − k)/B
  (hand-derived)."""
  sae, v, x = make("jumprelu", jumprelu_penalty="target", jumprelu_bandwidth=0.5)
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  pre = (xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
  l0_t = (pre > p["threshold"]).sum(-1)
  assert len(set(l0_t.tolist())) > 1 and (l0_t != 4).any()  # The penalty is not trivially 0.
  np.testing.assert_allclose(
    loss_of(sae, v, x).terms["sparsity"], 0.3 / D * np.mean(2 / 4 * (l0_t - 4.0) ** 2), rtol=1e-5
  )
  grad = jax.grad(lambda th: loss_of(sae, _with(v, threshold=th), x).terms["sparsity"])(
    v["params"]["threshold"]
  )
  kernel = np.abs((pre - p["threshold"]) / 0.5) < 0.5
  factor = 0.3 / D * (4 / 4) * (l0_t - 4.0) / BATCH  # d/dL0_t of (λ/d)·mean (2/k)(L0_t − k)².
  expected = (factor[:, None] * (-1 / 0.5) * kernel).sum(0)
  assert np.abs(expected).max() > 0
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def _with(variables, **params):
  return {**variables, "params": {**variables["params"], **params}}


def test_jumprelu_bandwidth_is_matched_to_the_input_scale():
  """Known mistake 5: ε and θ₀ of 0.001 are for E‖x‖² = 1; ours is E‖x‖² = d."""
  cfg = SAEConfig("jumprelu", d_in=64, n_latents=128)
  assert cfg.bandwidth == pytest.approx(0.008)
  assert cfg.init_threshold == pytest.approx(0.008)


def test_batchtopk_keeps_k_times_batch_entries_then_uses_its_threshold():
  sae, v, x = make("batchtopk", k_aux=0)
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  acts = np.maximum((xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 0)
  kth = np.sort(acts.ravel())[::-1][4 * BATCH - 1]
  z = np.where(acts >= kth, acts, 0)
  out = loss_of(sae, v, x, train=True)
  np.testing.assert_allclose(out.stats["l0"], 4.0)
  np.testing.assert_allclose(out.stats["batch_threshold"], kth, rtol=1e-6)
  np.testing.assert_allclose(
    out.terms["reconstruction"], recon_error(xn, z @ p["W_dec"] + p["b_dec"]), rtol=1e-5
  )
  buffers = sae.apply(v, out.stats, method="updated_buffers")
  np.testing.assert_allclose(buffers["threshold"], kth, rtol=1e-6)  # First batch sets θ.
  again = sae.apply({**v, "buffers": buffers}, out.stats, method="updated_buffers")
  np.testing.assert_allclose(again["threshold"], kth, rtol=1e-6)  # EMA of equal values.
  inference = sae.apply({**v, "buffers": buffers}, x, method="encode").latents
  np.testing.assert_allclose(inference, np.where(acts > kth, acts, 0), atol=1e-5)


def test_fvu_statistic_is_against_the_mean_and_sees_constant_offsets():
  """Known mistakes 3 and 8: variance about the mean, and a constant error offset counts."""
  sae, v, x = make("topk", k_aux=0)
  out = loss_of(sae, v, x)
  p, xn = numpy_params(v), np.asarray(x, np.float64)
  x_hat = topk_np((xn - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 4) @ p["W_dec"] + p["b_dec"]
  fvu = np.sum((xn - x_hat) ** 2) / np.sum((xn - xn.mean(0)) ** 2)
  np.testing.assert_allclose(out.stats["fvu"], fvu, rtol=1e-5)
  # A reconstruction off by a constant has Var(x − x̂) = 0 but a real error.
  offset = sae.apply(v, x, x + 1.0, jnp.zeros((BATCH, N)), method="statistics")
  assert float(offset["fvu"]) > 0.5


def test_constraints_renormalize_the_decoder_and_clip_the_threshold():
  sae, v, _ = make("jumprelu", decoder_norm="unit")
  params = {**v["params"], "threshold": v["params"]["threshold"].at[0].set(-1.0)}
  constrained = sae.constrain(params)
  np.testing.assert_allclose(np.linalg.norm(constrained["W_dec"], axis=-1), 1.0, rtol=1e-6)
  assert float(constrained["threshold"][0]) == 0.0
  for name in ("relu", "jumprelu"):  # Free decoders by default: left alone.
    free, fv, _ = make(name)
    np.testing.assert_array_equal(free.constrain(fv["params"])["W_dec"], fv["params"]["W_dec"])


def test_bad_configs_name_the_problem_and_the_fix():
  with pytest.raises(ConfigError, match="k=64 must be in \\[1, n_latents=32\\]"):
    SAEConfig("topk", d_in=D, n_latents=N, k=64)
  with pytest.raises(ConfigError, match='did you mean "topk"'):
    SAEConfig("topkk", d_in=D, n_latents=N)
  with pytest.raises(ConfigError, match="multi_topk is TopK-only"):
    SAEConfig("batchtopk", d_in=D, n_latents=N, k=2, multi_topk=True)
  with pytest.raises(ConfigError, match="does not have"):
    SAEConfig("topk", d_in=D, n_latents=N, decoder_norm="penalty")
  with pytest.raises(ConfigError) as info:  # Every problem at once.
    SAEConfig("topk", d_in=D, n_latents=N, k=64, aux_alpha=-1.0, matryoshka=(100,))
  assert len(info.value.problems) == 3


def test_every_architecture_is_registered_and_trains_its_parameters():
  for name in registry.names():
    sae, v, x = make(name)
    grads = jax.grad(lambda p, s=sae, vv=v, xx=x: loss_of(s, {**vv, "params": p}, xx).total)(
      v["params"]
    )
    for param, g in grads.items():
      assert np.all(np.isfinite(np.asarray(g))), (name, param)
    assert np.abs(np.asarray(grads["W_enc"])).sum() > 0, name


def _big_dots(jaxpr, threshold):
  """dot_generals of at least `threshold` multiply-adds in a (closed) jaxpr, nested ones included."""
  count = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      out = eqn.outvars[0].aval.shape
      contracted = int(np.prod([lhs[i] for i in lhs_contract]))
      count += int(np.prod(out)) * contracted >= threshold
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      count += _big_dots(sub, threshold)
  return count


@pytest.mark.parametrize("architecture,matmuls", [("relu", 5), ("jumprelu", 5), ("gated", 9)])
def test_a_dense_step_has_the_counted_matmuls(architecture, matmuls):
  """The benchmark's dense floor counts these B×d×n matmuls per step (jaxsae.bench.floor)."""
  batch, d, n = 64, 16, 128
  cfg = SAEConfig(architecture, d_in=d, n_latents=n, k=4, sparsity_coefficient=0.1)
  sae = registry.build(cfg)
  x = jax.random.normal(jax.random.key(0), (batch, d))
  params = nn.meta.unbox(sae.init(jax.random.key(1), x))["params"]

  def total(p):
    return sae.apply({"params": p}, x, method="loss").total

  jaxpr = jax.make_jaxpr(jax.grad(total))(params).jaxpr
  assert _big_dots(jaxpr, batch * d * n) == matmuls
