"""The TopK SAE's sparse training path equals its dense path: every loss term, statistic and
gradient, with AuxK, Multi-TopK, Matryoshka and a traced k below the static k; and a latent-sharded
sparse run equals a single-device dense run."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.sae import registry, row_sources, synthetic, train_config
from jaxsae.sae import train as train_lib
from jaxsae.sae.base import Hyper
from jaxsae.sae.config import SAEConfig

D, N, BATCH = 16, 256, 64

OPTIONS = {
  "plain": dict(k_aux=0),
  "aux_k": dict(k_aux=24),  # more than the dead latents below: the sparse path must drop live ones
  "multi_topk": dict(multi_topk=True, k_aux=8),
  "matryoshka": dict(matryoshka=(16, 64), k_aux=8),
}


def variables_and_inputs(cfg):
  sae = registry.build(cfg)
  x = jax.random.normal(jax.random.key(0), (BATCH, D))
  variables = nn.meta.unbox(sae.init(jax.random.key(1), x))
  keys = iter(jax.random.split(jax.random.key(2), 8))
  params = {
    name: value + 0.1 * jax.random.normal(next(keys), value.shape)
    for name, value in variables["params"].items()
  }
  params["b_enc"] = params["b_enc"] - 2.3  # some of the top-k negative: the ReLU cuts them
  return {**variables, "params": params}, x


def loss_and_grads(cfg, variables, x, hyper, dead):
  sae = registry.build(cfg)

  def total(params):
    out = sae.apply({**variables, "params": params}, x, hyper, dead, method="loss")
    return out.total, out

  (_, out), grads = jax.value_and_grad(total, has_aux=True)(variables["params"])
  return out, grads


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.slow
def test_sparse_path_equals_the_dense_path(option):
  sparse = SAEConfig("topk", d_in=D, n_latents=N, k=6, topk_path="sparse", **OPTIONS[option])
  dense = dataclasses.replace(sparse, topk_path="dense")
  assert registry.build(sparse).sparse_path and not registry.build(dense).sparse_path
  variables, x = variables_and_inputs(sparse)
  dead = jax.random.bernoulli(jax.random.key(3), 0.05, (N,))  # ~13 dead latents
  hyper = dataclasses.replace(Hyper.of(sparse), k=jnp.asarray(5, jnp.int32))  # traced k < k
  got, got_grads = jax.jit(loss_and_grads, static_argnums=0)(sparse, variables, x, hyper, dead)
  want, want_grads = loss_and_grads(dense, variables, x, hyper, dead)

  assert sorted(got.terms) == sorted(want.terms) and sorted(got.stats) == sorted(want.stats)
  for name in want.terms:
    np.testing.assert_allclose(got.terms[name], want.terms[name], rtol=1e-5, err_msg=name)
  for name in want.stats:
    np.testing.assert_allclose(got.stats[name], want.stats[name], rtol=1e-5, err_msg=name)
  assert float(want.stats["l0"]) < 5  # the ReLU did cut some of the k = 5
  if "aux_k" in want.terms:
    assert float(want.terms["aux_k"]) > 0
  for name in want_grads:
    scale = max(float(jnp.max(jnp.abs(want_grads[name]))), 1e-3)
    np.testing.assert_allclose(
      got_grads[name], want_grads[name], atol=1e-5 * scale, rtol=1e-4, err_msg=name
    )


def test_auto_picks_the_sparse_path_for_wide_dictionaries():
  def picks(**kw):
    return registry.build(SAEConfig("topk", d_in=D, **kw)).sparse_path

  assert picks(n_latents=16384, k=32)
  assert not picks(n_latents=64, k=16)
  assert not picks(n_latents=1024, k=32, multi_topk=True)  # the top-4k is 128 wide
  assert not registry.build(SAEConfig("batchtopk", d_in=D, n_latents=16384, k=32)).sparse_path


@pytest.mark.slow
def test_latent_sharded_sparse_run_equals_a_single_device_dense_run(tmp_path):
  features = synthetic.SyntheticFeatures(d=16, n_features=32, active=3, noise=0.05)
  rows = row_sources.ArraySource(features.generate(4096))

  def run(name, path, model):
    c = train_config.base_config()
    c.sae.n_latents, c.sae.k, c.sae.topk_path, c.sae.multi_topk = 128, 4, path, True
    c.train.batch_size, c.train.steps, c.train.log_every = 128, 8, 4
    c.train.checkpoint_every, c.train.dead_window_tokens = 1000, 256
    c.mesh.model = model
    c.data.normalization_samples, c.data.b_dec_samples = 1024, 256
    return train_lib.train(c, tmp_path / name, rows)

  dense, sparse = run("dense", "dense", 1), run("sparse", "sparse", 4)
  for name, want in dense.state.params["topk"].items():
    got = sparse.state.params["topk"][name]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, err_msg=name)
  np.testing.assert_array_equal(
    dense.state.extras["topk"]["tokens_since_fired"],
    sparse.state.extras["topk"]["tokens_since_fired"],
  )
  assert sparse.history[-1].keys() == dense.history[-1].keys()
  for key in ("loss/total", "loss/multi_topk", "loss/aux_k", "l0", "fvu", "dead_fraction"):
    np.testing.assert_allclose(
      sparse.history[-1][key], dense.history[-1][key], rtol=1e-4, atol=1e-6, err_msg=key
    )


@pytest.mark.parametrize("path", ["sparse", "dense"])
@pytest.mark.slow
def test_no_dead_latents_skips_aux_k_with_the_same_result(path):
  cfg = SAEConfig("topk", d_in=D, n_latents=N, k=6, k_aux=8, topk_path=path)
  variables, x = variables_and_inputs(cfg)
  sae = registry.build(cfg)
  skipped = sae.apply(variables, x, Hyper.of(cfg), None, method="loss")
  computed = sae.apply(variables, x, Hyper.of(cfg), jnp.zeros(N, bool), method="loss")
  assert float(computed.terms["aux_k"]) == 0.0 and int(computed.stats["dead"]) == 0
  assert jax.tree.structure(skipped) == jax.tree.structure(computed)
  for got, want in zip(jax.tree.leaves(skipped), jax.tree.leaves(computed), strict=True):
    np.testing.assert_array_equal(got, want)
  jaxpr = str(
    jax.make_jaxpr(lambda v: sae.apply(v, x, Hyper.of(cfg), None, method="loss"))(variables)
  )
  assert jaxpr.count("top_k") == 1  # the k-set's only: AuxK's top-k is not traced
