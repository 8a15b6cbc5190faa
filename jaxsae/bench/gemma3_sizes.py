"""The text decoders of Gemma 3 (google/gemma-3-{270m,1b,4b,12b,27b}-pt) as `TransformerConfig`s,
without downloading them: what the memory benchmarks (`jaxsae.bench.model_memory`,
experiments/bench/gemma3_memory.py) plan for.
"""

from __future__ import annotations

from jaxsae.models.config import TransformerConfig

GEMMA3_SIZES = ("270m", "1b", "4b", "12b", "27b")
# Per size: (d_model, n_layers, n_heads, n_kv_heads, head_dim, d_mlp, vocab_size,
# query_pre_attn_scalar, sliding_window, linear RoPE factor of the full layers).
# These are the Hugging Face config.json values of google/gemma-3-{size}-pt (hidden_size,
# num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, intermediate_size,
# vocab_size, query_pre_attn_scalar, sliding_window, rope_scaling); for 4B+ the text_config of
# the multimodal checkpoint. All: rms_norm_eps 1e-6, hidden_activation gelu_pytorch_tanh,
# rope_theta 1e6, rope_local_base_freq 1e4, sliding_window_pattern 6 (5 sliding : 1 full),
# max_position_embeddings 32768 (270M, 1B) or 131072 (4B+), tied embeddings, no biases.
_GEMMA3 = {
  "270m": (640, 18, 4, 1, 256, 2048, 262144, 256, 512, 1.0),
  "1b": (1152, 26, 4, 1, 256, 6912, 262144, 256, 512, 1.0),
  "4b": (2560, 34, 8, 4, 256, 10240, 262208, 256, 1024, 8.0),
  "12b": (3840, 48, 16, 8, 256, 15360, 262208, 256, 1024, 8.0),
  "27b": (5376, 62, 32, 16, 128, 21504, 262208, 168, 1024, 8.0),
}


def gemma3_config(size: str, dtype: str = "bfloat16") -> TransformerConfig:
  """The text decoder of google/gemma-3-{size}-pt as a `TransformerConfig` (as
  `jaxsae.models.families.gemma.config` reads its config.json), computing in `dtype`."""
  if size not in _GEMMA3:
    raise ValueError(f"Gemma 3 size {size!r}: choose one of {GEMMA3_SIZES}")
  D, L, H, G, K, F, V, qpas, window, factor = _GEMMA3[size]
  return TransformerConfig(
    vocab_size=V,
    d_model=D,
    n_layers=L,
    n_heads=H,
    n_kv_heads=G if G != H else 0,
    d_head=K,
    d_mlp=F,
    max_len=32768 if size in ("270m", "1b") else 131072,
    norm="rmsnorm",
    norm_eps=1e-6,
    norm_scale_offset=1.0,
    positions="rotary",
    rope_theta=1e6,
    rope_local_theta=1e4,
    rope_scaling="linear" if factor != 1 else "none",
    rope_scaling_factor=factor,
    activation="gelu",
    gated_mlp=True,
    post_norms=True,
    qk_norm=True,
    embed_scale=True,
    query_pre_attn_scalar=float(qpas),
    sliding_window=window,
    layer_types=tuple("sliding" if (i + 1) % 6 else "full" for i in range(L)),
    tied_embeddings=True,
    use_bias=False,
    dtype=dtype,
  )
