"""The Gemma 3 configs the memory benchmarks plan for (jaxsae.bench.gemma3_sizes) are what the
Gemma loader reads from each size's config.json."""

import pytest

from jaxsae.bench import gemma3_sizes
from jaxsae.models.families import gemma


def _hf_values(size: str) -> dict:
  """google/gemma-3-{size}-pt's config.json (the text config), as transformers writes it."""
  c = gemma3_sizes.gemma3_config(size)
  values = dict(
    model_type="gemma3_text",
    hidden_size=c.d_model,
    num_hidden_layers=c.n_layers,
    num_attention_heads=c.n_heads,
    num_key_value_heads=c.kv_heads,
    head_dim=c.d_head,
    intermediate_size=c.d_mlp,
    vocab_size=c.vocab_size,
    query_pre_attn_scalar=c.query_pre_attn_scalar,
    sliding_window=c.sliding_window,
    sliding_window_pattern=6,
    rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0,
    rope_scaling={"rope_type": "linear", "factor": 8.0} if size not in ("270m", "1b") else None,
    max_position_embeddings=32768 if size in ("270m", "1b") else 131072,
    rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    attention_bias=False,
    tie_word_embeddings=True,
  )
  return values


@pytest.mark.parametrize("size", gemma3_sizes.GEMMA3_SIZES)
def test_gemma3_configs_are_what_the_loader_reads(size):
  assert gemma.config(_hf_values(size), "bfloat16") == gemma3_sizes.gemma3_config(size)
  c = gemma3_sizes.gemma3_config(size)
  assert c.layer_types.count("full") == c.n_layers // 6 and c.layer_types[5] == "full"
  assert (c.rope_scaling == "linear") == (size not in ("270m", "1b"))
