"""Pruning to circuits (Gao et al. 2025): node masks with mean ablation, the Heaviside mask and
its surrogate gradient, frozen norms, bisection, edge counting, circuits on disk, the report and
the experiment end to end."""

import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_circuit_config
from jaxsae.errors import CheckpointError, ConfigError, JaxsaeError
from jaxsae.models import pretrained
from jaxsae.models import transformer as T
from jaxsae.models.language_model import LanguageModel
from jaxsae.sparse import edges, nodes, prune, report
from jaxsae.sparse.pruned_circuit import Circuit
from jaxsae.sparse.tasks import ContrastPair, Example, Task
from jaxsae.text.tokenizer import ByteTokenizer


def _config(**overrides):
  return tiny_circuit_config(**{"attention_sink": True, "bigram_table": True, **overrides})


@pytest.fixture(scope="module")
def lm():
  cfg = _config()
  params = T.init_params(T.Transformer(cfg), jax.random.key(0))
  return LanguageModel(cfg, params, ByteTokenizer())


def _tokens(n=3, t=12, seed=1):
  return jax.random.randint(jax.random.key(seed), (n, t), 0, 256)


def _means(lm, seed=5):
  rng = np.random.default_rng(seed)
  return {
    s: rng.normal(size=nodes.site_width(lm.config, s)).astype(np.float32)
    for s in nodes.node_sites(lm.config)
  }


def test_node_sites_and_counts(lm):
  sites = nodes.node_sites(lm.config)
  assert len(sites) == 8 * 2 + 1 and sites[-1] == "final.normed"
  # 7 d_model + d_mlp per layer when n_heads * d_head = d_model, plus the final residual.
  assert nodes.node_count(lm.config) == 2 * (7 * 16 + 32) + 16


@pytest.mark.slow
def test_all_masks_on_is_the_unmasked_model(lm):
  tokens = _tokens()
  clean, _ = T.run(lm.module, lm.params, tokens)
  ones = {s: jnp.ones(nodes.site_width(lm.config, s)) for s in nodes.node_sites(lm.config)}
  for frozen in (None, nodes.clean_norms(lm.module, lm.params, tokens)):
    edits = nodes.masked_edits(lm.config, ones, _means(lm), frozen)
    masked, _ = T.run(lm.module, lm.params, tokens, edits=edits)
    np.testing.assert_allclose(masked, clean, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_all_masks_off_is_a_forward_pass_from_the_means(lm):
  tokens = _tokens()
  means = _means(lm)
  zeros = {s: jnp.zeros(nodes.site_width(lm.config, s)) for s in nodes.node_sites(lm.config)}
  edits = nodes.masked_edits(lm.config, zeros, means)
  sites = nodes.node_sites(lm.config)
  logits, captured = T.run(lm.module, lm.params, tokens, edits=edits, capture=sites)
  for s in sites:  # Every node holds its mean at every position.
    flat = np.asarray(captured[s]).reshape(*tokens.shape, -1)
    np.testing.assert_allclose(flat, np.broadcast_to(means[s], flat.shape), atol=1e-6)
  # The logits are the unembedded final mean plus the bigram table.
  expected = means["final.normed"] @ np.asarray(lm.params["unembed"]["kernel"])
  expected = expected + np.asarray(lm.params["bigram"])[np.asarray(tokens)]
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_one_masked_node_is_mean_ablated_and_nothing_else_at_its_site(lm):
  tokens = _tokens()
  site, channel = "blocks.0.attn.q", 11  # head 1, dim 3
  mask = np.ones(16, np.float32)
  mask[channel] = 0
  means = _means(lm)
  _, clean = T.run(lm.module, lm.params, tokens, capture=[site])
  edits = nodes.masked_edits(lm.config, {site: mask}, means)
  _, got = T.run(lm.module, lm.params, tokens, edits=edits, capture=[site])
  before = np.asarray(clean[site]).reshape(3, 12, 16)
  after = np.asarray(got[site]).reshape(3, 12, 16)
  np.testing.assert_allclose(after[..., channel], means[site][channel], atol=1e-6)
  keep = np.arange(16) != channel
  np.testing.assert_allclose(after[..., keep], before[..., keep], atol=1e-6)


@pytest.mark.slow
def test_node_means_are_the_means_of_the_captured_activations(lm):
  windows = np.asarray(_tokens(5, 10, seed=3))
  means = nodes.node_means(lm, windows, batch_size=2)
  _, captured = lm.run(windows, capture=["blocks.1.mlp.post", "blocks.0.attn.z"])
  np.testing.assert_allclose(
    means["blocks.1.mlp.post"], np.asarray(captured["blocks.1.mlp.post"]).mean((0, 1)), atol=1e-6
  )
  z = np.asarray(captured["blocks.0.attn.z"]).reshape(5, 10, 16)
  np.testing.assert_allclose(means["blocks.0.attn.z"], z.mean((0, 1)), atol=1e-6)
  with pytest.raises(JaxsaeError, match="non-empty"):
    nodes.node_means(lm, np.zeros((0, 4), np.int32))


def test_frozen_norm_divides_by_the_clean_rms(lm):
  """With freeze_norm, blocks.1.attn.in = resid_ablated * g / rms(resid_clean)."""
  tokens = _tokens()
  site = "blocks.0.mlp.out"
  mask = {site: jnp.zeros(16)}
  means = _means(lm)
  frozen = nodes.clean_norms(lm.module, lm.params, tokens)
  _, clean = T.run(lm.module, lm.params, tokens, capture=["blocks.1.resid_pre"])
  edits = nodes.masked_edits(lm.config, mask, means, frozen)
  names = ["blocks.1.resid_pre", "blocks.1.attn.in"]
  _, got = T.run(lm.module, lm.params, tokens, edits=edits, capture=names)
  resid_clean = np.asarray(clean["blocks.1.resid_pre"], np.float64)
  rms_clean = np.sqrt((resid_clean**2).mean(-1, keepdims=True) + lm.config.norm_eps)
  gain = np.asarray(lm.params["blocks_1"]["attn_norm"]["scale"])
  expected = np.asarray(got["blocks.1.resid_pre"]) * gain / rms_clean
  np.testing.assert_allclose(got["blocks.1.attn.in"], expected, rtol=1e-4, atol=1e-5)
  # Without freezing, the ablated residual is normalized by its own rms.
  _, free = T.run(
    lm.module, lm.params, tokens, edits=nodes.masked_edits(lm.config, mask, means), capture=names
  )
  assert not np.allclose(free["blocks.1.attn.in"], got["blocks.1.attn.in"], atol=1e-4)
  layernorm = _config(norm="layernorm")
  with pytest.raises(ConfigError, match="rmsnorm"):
    nodes.masked_edits(layernorm, {}, {}, frozen)


def test_bad_masks_name_the_site_and_width(lm):
  with pytest.raises(JaxsaeError, match="blocks.0.mlp.post.*32 channels"):
    nodes.check_masks(lm.config, {"blocks.0.mlp.post": np.ones(16)})
  with pytest.raises(JaxsaeError, match="not a node site"):
    nodes.check_masks(lm.config, {"blocks.0.resid_mid": np.ones(16)})


def test_heaviside_forward_and_sigmoid_surrogate_gradient():
  tau = jnp.array([-0.5, -0.0, 0.0, 1e-4, 0.7])
  np.testing.assert_array_equal(prune.heaviside(tau), [0, 0, 0, 1, 1])
  for temperature in (1.0, 0.25):
    grad = jax.grad(lambda t, temp=temperature: (prune.heaviside(t, temp) * 2.0).sum())(tau)
    s = 1 / (1 + np.exp(-np.asarray(tau) / temperature))
    np.testing.assert_allclose(grad, 2.0 * s * (1 - s) / temperature, rtol=1e-6)


def test_prune_config_rejects_bad_values():
  with pytest.raises(ConfigError, match=r"(?s)prune.steps=0.*prune.init=2"):
    prune.PruneConfig(steps=0, init=2.0)


class _ToyPruner(prune.Pruner):
  """A pruner whose task loss is a known function of the kept set: 1 - (important kept) / 4."""

  important = (3, 17, 40, 41)

  def evaluate(self, mask_flat, task, batch):
    kept = sum(mask_flat[i] > 0 for i in self.important)
    return {"loss": 1.0 - kept / 4, "accuracy": 0.5 + kept / 8}


def test_bisection_finds_the_smallest_circuit_meeting_the_target(lm):
  rng = np.random.default_rng(0)
  for target, needed in ((0.0, 4), (0.25, 3), (0.5, 2), (0.8, 1)):
    pruner = _ToyPruner(lm, _means(lm), prune.PruneConfig(target_loss=target + 1e-9))
    tau = rng.uniform(-1, 1, pruner.n_nodes).astype(np.float32)
    tau[list(_ToyPruner.important)] = rng.uniform(0.1, 1.0, 4)  # all on at the end of training
    n, at, trail = pruner.bisect(tau, None, None)
    order = pruner.order(tau)
    rank = sorted(int(np.flatnonzero(order == i)[0]) for i in _ToyPruner.important)
    brute = rank[needed - 1] + 1  # smallest n whose top-n holds `needed` important nodes
    assert n == brute and at["loss"] <= target + 1e-9
    assert len(trail) <= 2 + math.ceil(math.log2(pruner.n_nodes)) + 1
  pruner = _ToyPruner(lm, _means(lm), prune.PruneConfig(target_loss=1e-3))
  tau = np.full(pruner.n_nodes, 0.5, np.float32)
  tau[3] = -0.5  # an important node off and the target needs all four: only n = N reaches it
  n, at, _ = pruner.bisect(tau, None, None)
  assert n == pruner.n_nodes and at["loss"] == 0.0


def _quote_model():
  """Blocks do nothing (zero weights); residual channel 0 carries +3 for byte 'a' and -3 for
  'b'; the unembedding reads only channel 0 for the two answers. The one node the task needs
  is final.normed:0."""
  cfg = _config(bigram_table=False, attention_sink=False, n_layers=1)
  params = jax.tree.map(np.zeros_like, T.init_params(T.Transformer(cfg), jax.random.key(1)))
  params = jax.tree.map(np.array, params)
  embed = np.random.default_rng(0).normal(0, 0.1, (257, 16)).astype(np.float32)
  embed[ord("a"), 0], embed[ord("b"), 0] = 3.0, -3.0
  params["embed"]["embedding"] = embed
  for norm in ("attn_norm", "mlp_norm"):
    params["blocks_0"][norm]["scale"] = np.ones(16, np.float32)
  params["final_norm"]["scale"] = np.ones(16, np.float32)
  unembed = np.zeros((16, 257), np.float32)
  unembed[0, ord("x")], unembed[0, ord("y")] = 2.0, -2.0
  params["unembed"]["kernel"] = unembed
  lm = LanguageModel(cfg, jax.tree.map(jnp.asarray, params), ByteTokenizer())
  rng = np.random.default_rng(2)

  def example(last, answer):
    ids = np.concatenate([[256], rng.integers(97, 123, 5), [ord(last)]]).astype(np.int32)
    return Example(ids, ord(answer))

  pairs = [ContrastPair(example("a", "x"), example("b", "y")) for _ in range(24)]
  task = Task("toy", "a -> x, b -> y", ord("x"), ord("y"), pairs)
  return lm, task


@pytest.mark.slow
def test_pruning_recovers_the_one_node_a_hand_built_task_needs():
  lm, task = _quote_model()
  windows = np.asarray(_tokens(4, 16, seed=9))
  means = nodes.node_means(lm, windows)
  config = prune.PruneConfig(steps=60, batch_pairs=8, lr=0.05, target_loss=0.05, eval_batch=16)
  circuit = prune.prune(lm, task, means, task.batch(8), task.batch(8), config, "toy")
  assert circuit.kept_nodes() == [("final.normed", 0)]
  m = circuit.metrics
  assert m["reached_target"] and m["nodes"] == 1
  assert (
    m["heldout"]["sufficiency"]["loss"] <= 0.05 and m["heldout"]["sufficiency"]["accuracy"] == 1
  )
  assert m["heldout"]["necessity"]["accuracy"] == 0.5  # without it the task is at chance
  # A constant margin c costs softplus(-c) + softplus(c) >= 2 log 2 per pair: chance or worse.
  assert m["heldout"]["necessity"]["loss"] >= 2 * math.log(2) - 1e-6
  assert m["edges"]["total"] == 0  # a lone final node has no edges


def _hand_built_sparse_model():
  cfg = _config(d_model=4, n_heads=1, d_head=4, d_mlp=8, bigram_table=False)
  params = jax.tree.map(np.array, T.init_params(T.Transformer(cfg), jax.random.key(0)))
  for layer in range(2):
    block = params[f"blocks_{layer}"]
    for module, names in (("attn", ("query", "key", "value", "out")), ("mlp", ("fc_in", "fc_out"))):
      for name in names:
        block[module][name]["kernel"][...] = 0
  b0 = params["blocks_0"]
  b0["attn"]["query"]["kernel"][0, 0, 1] = 0.5  # attn.in:0 -> q:1
  b0["attn"]["key"]["kernel"][1, 0, 2] = 0.7  # attn.in:1 -> k:2 (attn.in:1 not kept)
  b0["attn"]["value"]["kernel"][2, 0, 3] = -1.5  # attn.in:2 -> v:3
  b0["attn"]["out"]["kernel"][0, 3, 0] = 2.0  # z:3 -> residual 0
  b0["mlp"]["fc_in"]["kernel"][0, 5] = 1.25  # mlp.in:0 -> post:5
  b0["mlp"]["fc_out"]["kernel"][5, 2] = -0.75  # post:5 -> mlp.out:2
  return cfg, params


def _kept(cfg, on):
  kept = {s: np.zeros(nodes.site_width(cfg, s), bool) for s in nodes.node_sites(cfg)}
  for site, channels in on.items():
    kept[site][channels] = True
  return kept


@pytest.mark.slow
def test_edge_count_on_a_hand_built_sparse_model():
  cfg, params = _hand_built_sparse_model()
  kept = _kept(
    cfg,
    {
      "blocks.0.attn.in": [0, 2],
      "blocks.0.attn.q": [1],
      "blocks.0.attn.k": [2],
      "blocks.0.attn.v": [3],
      "blocks.0.attn.z": [3],
      "blocks.0.mlp.in": [0],
      "blocks.0.mlp.post": [5],
      "blocks.0.mlp.out": [2],
      "blocks.1.attn.in": [0, 2],
      "final.normed": [2],
    },
  )
  counts = edges.count_edges(params, cfg, kept)
  # qkv: in:0->q:1, in:2->v:3 (k:2 reads the unkept in:1). v:3->z:3. z:3 writes residual 0:
  # read by mlp.in(0):0 and attn.in(1):0. in:0->post:5. post:5->out:2. out:2 is read by
  # attn.in(1):2 and the final residual's 2.
  assert counts == {
    "qkv": 2,
    "v->z": 1,
    "attn->resid": 2,
    "mlp.in": 1,
    "mlp.out": 1,
    "mlp->resid": 2,
    "total": 9,
  }
  listed = list(edges.edge_list(params, cfg, kept))
  assert len(listed) == 9
  by_pair = {(e.src, e.src_channel, e.dst, e.dst_channel): (e.kind, e.weight) for e in listed}
  assert by_pair[("blocks.0.attn.in", 2, "blocks.0.attn.v", 3)] == ("qkv", -1.5)
  assert by_pair[("blocks.0.attn.z", 3, "blocks.1.attn.in", 0)] == ("attn->resid", 2.0)
  assert by_pair[("blocks.0.mlp.post", 5, "blocks.0.mlp.out", 2)] == ("mlp.out", -0.75)
  assert by_pair[("blocks.0.mlp.out", 2, "final.normed", 2)] == ("mlp->resid", 1.0)
  # Everything kept: every nonzero weight counts once per reader, identities once per channel.
  whole = edges.count_edges(params, cfg, {})
  assert whole["qkv"] == 3 and whole["mlp.in"] == 1 and whole["mlp.out"] == 1
  assert whole["v->z"] == 2 * 4
  assert whole["attn->resid"] == 4  # residual 0 read by mlp.in(0), attn.in(1), mlp.in(1), final
  # mlp.out of layer 0 reaches 3 later readers, layer 1's reaches the final: 4 channels each.
  assert whole["mlp->resid"] == 4 * 3 + 4 * 1


def test_circuit_round_trip_and_corrupt_files(tmp_path, lm):
  kept = {
    s: np.arange(nodes.site_width(lm.config, s)) % 3 == 0 for s in nodes.node_sites(lm.config)
  }
  scores = {s: np.linspace(-1, 1, len(k)).astype(np.float32) for s, k in kept.items()}
  circuit = Circuit("closing_quote", "toy", kept, scores, {"nodes": 5, "x": np.float32(0.5)})
  path = circuit.save(tmp_path / "c.json")
  back = Circuit.load(path)
  assert back.task == "closing_quote" and back.n_nodes == circuit.n_nodes
  for s in kept:
    np.testing.assert_array_equal(back.kept[s], kept[s])
    np.testing.assert_allclose(back.scores[s], scores[s], atol=1e-6)
  assert back.metrics["x"] == 0.5
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="cannot read circuit"):
    Circuit.load(tmp_path / "bad.json")
  doc = json.loads(path.read_text())
  del doc["kept"]
  with pytest.raises(CheckpointError, match="corrupt"):
    Circuit.from_dict(doc)


def _row(model, task, edges_, reached=True, control=False, loss=1.7, density=1.0):
  return {
    "model": model,
    "task": task,
    "control": control,
    "edges": edges_,
    "reached": reached,
    "pretrain_loss": loss,
    "hidden_density": density,
    "full_loss": 0.5,
    "sufficiency_loss": 0.1,
  }


def test_edge_ratio_is_the_geometric_mean_over_tasks_both_reached():
  rows = [
    _row("s", "a", 10, density=0.1),
    _row("d", "a", 160),
    _row("s", "b", 20, density=0.1),
    _row("d", "b", 80),
    _row("s", "c", 5, reached=False, density=0.1),  # unreached: left out
    _row("d", "c", 50),
    _row("s", "a", 999, control=True, density=0.1),  # controls never enter the ratio
  ]
  ratios, gm = report.edge_ratios(rows, "s", "d")
  assert [r["task"] for r in ratios] == ["a", "b"]
  assert [r["ratio"] for r in ratios] == [16.0, 4.0]
  assert gm == pytest.approx(8.0)
  points = {p["model"]: p for p in report.frontier(rows)}
  assert points["s"]["edges_geomean"] == pytest.approx(math.sqrt(10 * 20))
  assert points["d"]["edges_geomean"] == pytest.approx(math.sqrt(160 * 80))
  text = "\n".join(report.findings(rows, [("s", "d")]))
  assert "**8.0x** the edges of `s`'s (geometric mean over 2 tasks" in text
  assert "dense *frontier*" in text and "`d`, 1.700 vs 1.700): **8.0x**" in text
  assert "Nonsense controls reaching the target: **1 of 1**" in text


@pytest.mark.slow
def test_prune_experiment_end_to_end(tmp_path, monkeypatch, lm):
  """experiments/prune.py on a small saved model: circuits for a task and its control, tables,
  the frontier figure."""
  from absl import flags

  from experiments import prune as experiment

  pretrained.save(tmp_path / "models" / "tiny", lm.config, lm.params, lm.tokenizer, {})
  work = tmp_path / "work"
  argv = [
    "prune",
    f"--workdir={work}",
    "--config=experiments/configs/prune.py:quick",
    f"--config.model_dir={tmp_path / 'models'}",
    "--config.models=tiny",
    "--config.max_len=32",
    "--config.n_train_pairs=8",
    "--config.n_heldout_pairs=4",
    "--config.mean_seq_len=32",
    "--config.prune.steps=3",
  ]
  monkeypatch.setattr(sys, "argv", argv)
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  experiment.main([])
  for name in ("closing_quote", "closing_quote_nonsense"):
    circuit = Circuit.load(work / "circuits" / "tiny" / f"{name}.json")
    assert circuit.metrics["nodes_total"] == nodes.node_count(lm.config)
    assert np.isfinite(circuit.metrics["heldout"]["sufficiency"]["loss"])
  rows = report.load_rows(work)
  assert {(r["task"], r["control"]) for r in rows} == {
    ("closing_quote", False),
    ("closing_quote", True),
  }
  assert (work / "figures" / "frontier.png").stat().st_size > 0
  assert "closing_quote" in (work / "RESULTS.md").read_text()
  flags.FLAGS.unparse_flags()
