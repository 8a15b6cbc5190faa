"""The harvest memory planner against XLA's compiled memory analysis of the harvest's forward
(tiny Gemma-3-shaped models on 1 and 8 devices, and Gemma 3 270M itself, abstractly), its
parameter shards against `LanguageModel.on_mesh`, and its Gemma 3 answers."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from jaxsae import sharding
from jaxsae.bench import memory
from jaxsae.bench import model_memory as mm
from jaxsae.bench.gemma3_sizes import gemma3_config
from jaxsae.bench.memory import GIB
from jaxsae.models import transformer as T
from jaxsae.models.language_model import LanguageModel
from jaxsae.text.tokenizer import ByteTokenizer

# Planned estimate / compiled peak must lie within 1 ± TOLERANCE (CPU buffer assignment).
TOLERANCE = 0.25
SAE = dict(n=65536, k=64, sae_batch=4096)


def tiny_gemma3(**overrides):
  """Gemma 3's architecture (270M's config) at toy size: 6 layers, 5 sliding : 1 full."""
  values = dict(vocab_size=4096, d_model=256, n_layers=6, d_head=64, d_mlp=1024, max_len=1024)
  values.update(sliding_window=64, layer_types=("sliding",) * 5 + ("full",), dtype="float32")
  return dataclasses.replace(gemma3_config("270m"), **{**values, **overrides})


def test_gemma3_parameter_counts():
  counts = {
    s: sum(e for e, _ in mm.parameter_shards(gemma3_config(s)).values()) for s in ("270m", "1b")
  }
  # 270M: 268M parameters, 170M of them the embedding; 1B: Keras Hub's gemma3_1b preset count.
  assert counts == {"270m": 268_098_176, "1b": 999_885_952}
  assert mm.parameter_bytes(gemma3_config("1b")) == 999_885_952 * 2


@pytest.mark.parametrize("model_axis", [1, 2, 4, 8])
def test_parameter_bytes_are_the_shards_on_mesh(model_axis):
  # 2 KV heads (replicated over 4 and 8 ways) and 4100 tokens (split 4 ways, not 8).
  cfg = tiny_gemma3(vocab_size=4100, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=64)
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), T.param_shapes(T.Transformer(cfg)))
  lm = LanguageModel(cfg, params, ByteTokenizer())
  placed = lm.on_mesh(sharding.make_mesh(-1, model_axis))
  held = sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(placed.params))
  assert mm.parameter_bytes(cfg, model_axis) == held
  assert mm.parameter_bytes(cfg, model_axis, "bfloat16") * 2 == held


CASES = [
  # (config overrides, hook, batch, seq_len, data, model, dtype)
  ({}, "blocks.1.resid_post", 8, 512, 1, 1, "float32"),  # Scores dominate.
  ({}, "blocks.5.resid_post", 8, 256, 2, 4, "float32"),
  ({}, "blocks.5.resid_post", 8, 256, 8, 1, "float32"),
  ({}, "blocks.3.resid_post", 8, 256, 1, 8, "float32"),  # 4 heads: replicated over 8.
  (dict(n_heads=8, n_kv_heads=2), "blocks.3.resid_post", 4, 512, 2, 4, "float32"),
  (dict(n_heads=8, n_kv_heads=2), "blocks.3.mlp.post", 8, 256, 1, 2, "float32"),
]


@pytest.mark.parametrize("overrides, hook, batch, seq_len, data, model, dtype", CASES)
@pytest.mark.slow
def test_plan_matches_compiled_forward(overrides, hook, batch, seq_len, data, model, dtype):
  cfg = tiny_gemma3(**overrides, dtype=dtype)
  measured = mm.compiled_harvest_memory(
    cfg, hook, batch, seq_len, data, model, compiler_options=mm.XLA_CPU_OPTIONS
  )
  planned = mm.plan_harvest(
    cfg, hook, batch, seq_len, data, model, keep_later_blocks=False, xla_cpu=True
  )
  assert abs(planned.estimate / measured.peak - 1) <= TOLERANCE, (planned.explain(), measured)
  if hook.endswith("resid_post"):  # Every parameter of the blocks run is read: exact.
    assert measured.argument == planned.persistent
  else:
    assert measured.argument < planned.persistent


@pytest.mark.parametrize(
  "dtype, hook, batch, seq_len, data, model",
  [
    ("float32", "blocks.17.resid_post", 2, 1024, 1, 1),
    ("bfloat16", "blocks.5.resid_post", 2, 1024, 1, 8),
  ],
)
@pytest.mark.slow
def test_gemma3_270m_plan_matches_compiled_forward(dtype, hook, batch, seq_len, data, model):
  cfg = gemma3_config("270m", dtype)
  measured = mm.compiled_harvest_memory(
    cfg, hook, batch, seq_len, data, model, compiler_options=mm.XLA_CPU_OPTIONS
  )
  planned = mm.plan_harvest(
    cfg, hook, batch, seq_len, data, model, keep_later_blocks=False, xla_cpu=True
  )
  assert measured.argument == planned.persistent
  assert abs(planned.estimate / measured.peak - 1) <= TOLERANCE, (planned.explain(), measured)


def test_plan_terms_follow_the_mesh_and_the_hook():
  cfg = gemma3_config("270m")
  one = mm.plan_harvest(cfg, "blocks.5.resid_post", 8, 1024)
  # Later blocks are held unless dropped: 12 of 18 blocks' parameters.
  dropped = mm.plan_harvest(cfg, "blocks.5.resid_post", 8, 1024, keep_later_blocks=False)
  embed = cfg.vocab_size * cfg.d_model * 2
  block = mm.parameter_bytes(cfg, n_blocks=1) - embed
  assert one.parameters == embed + 18 * block + cfg.d_model * 2  # + the final norm.
  assert dropped.parameters == embed + 6 * block
  # The data axis splits the rows, not the parameters.
  halves = mm.plan_harvest(cfg, "blocks.5.resid_post", 8, 1024, data_shards=2)
  assert halves.parameters == one.parameters and halves.attention * 2 == one.attention
  # 4 heads split 4 ways, but replicated over 8: every device then computes all of them.
  four, eight = (mm.plan_harvest(cfg, "blocks.5.resid_post", 8, 1024, 1, m) for m in (4, 8))
  assert four.attention * 4 < one.attention * 1.1 and eight.attention > 2 * four.attention
  assert eight.mlp * 2 == four.mlp and eight.parameters < four.parameters
  with pytest.raises(ValueError, match="one vector per token"):
    mm.plan_harvest(cfg, "blocks.5.attn.pattern", 8, 1024)


def test_harvest_and_train_shares_the_devices():
  cfg = gemma3_config("4b")
  both = mm.plan_harvest_and_train(cfg, "blocks.17.resid_post", 32, 1024, **SAE, model_shards=2)
  harvest = mm.plan_harvest(cfg, "blocks.17.resid_post", 32, 1024, 1, 2, 80 * GIB)
  sae = memory.plan(cfg.d_model, 65536, 64, 4096, 1, 2, device_memory_bytes=80 * GIB)
  assert both.harvest == harvest and both.sae == sae
  assert both.estimate == (
    harvest.persistent + harvest.captures + sae.persistent
    + max(harvest.working - harvest.captures, sae.working)
  )  # fmt: skip
  assert harvest.estimate < both.estimate < harvest.estimate + sae.estimate
  fits_exactly = dataclasses.replace(both, device_memory_bytes=both.total)
  assert (
    fits_exactly.fits and not dataclasses.replace(both, device_memory_bytes=both.total - 1).fits
  )
  assert "does NOT fit" in dataclasses.replace(both, device_memory_bytes=GIB).explain()


def _fewest_ways(size, memory_gib, train):
  cfg = gemma3_config(size)
  hook = f"blocks.{cfg.n_layers // 2}.resid_post"
  for ways in (1, 2, 4, 8):
    kw = dict(model_shards=ways, device_memory_bytes=memory_gib * GIB)
    p = (
      mm.plan_harvest_and_train(cfg, hook, 32, 1024, **SAE, **kw)
      if train
      else mm.plan_harvest(cfg, hook, 32, 1024, **kw)
    )
    if p.fits:
      return ways
  return None


@pytest.mark.slow
def test_gemma3_headline():
  # docs/bench/gemma3_memory.md: bfloat16 weights, 32 windows of 1024 tokens, SAE n=65536.
  assert _fewest_ways("270m", 16, train=True) == 1
  assert _fewest_ways("4b", 16, train=False) == 1 and _fewest_ways("4b", 16, train=True) == 2
  assert _fewest_ways("12b", 16, train=False) == 2 and _fewest_ways("12b", 40, train=True) == 1
  assert _fewest_ways("27b", 80, train=True) == 1 and _fewest_ways("27b", 40, train=True) == 2
  assert _fewest_ways("27b", 16, train=True) == 8
