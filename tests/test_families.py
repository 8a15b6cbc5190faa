"""Every model family against transformers itself: tiny random checkpoints built and saved by
transformers (safetensors + tokenizer.json), loaded by `pretrained.load`; float32 logits within
1e-4 and equal greedy generations. Plus the converters' refusals and the TransformerLens aliases."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from char_tokenizer import tokenizer_json

from jaxsae.errors import CheckpointError
from jaxsae.models import families, pretrained, sampling
from jaxsae.models import transformer as T

VOCAB = 128
COMMON = dict(
  vocab_size=VOCAB,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=3,
  num_attention_heads=4,
  max_position_embeddings=64,
  initializer_range=0.2,
  bos_token_id=1,
  eos_token_id=2,
)
SLIDING = ["sliding_attention", "full_attention", "sliding_attention"]
FAMILIES = {
  # Llama 3.1 rope scaling and grouped-query attention, untied.
  "llama": lambda: transformers.LlamaConfig(
    **COMMON,
    num_key_value_heads=2,
    tie_word_embeddings=False,
    rope_parameters={
      "rope_type": "llama3",
      "rope_theta": 500000.0,
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8,
    },
  ),
  # QK-norm, d_head * heads != d_model, tied.
  "qwen3": lambda: transformers.Qwen3Config(
    **COMMON, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True
  ),
  # Multi-query attention with q/k/v biases.
  "qwen2": lambda: transformers.Qwen2Config(**COMMON, num_key_value_heads=1),
  # A sliding window on every layer, shorter than the sequence.
  "mistral": lambda: transformers.MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=5),
  # Soft-capping, query_pre_attn_scalar != d_head, alternating windows, post-norms.
  "gemma2": lambda: transformers.Gemma2Config(
    **COMMON,
    num_key_value_heads=2,
    head_dim=16,
    sliding_window=5,
    query_pre_attn_scalar=12,
    attn_logit_softcapping=5.0,
    final_logit_softcapping=3.0,
  ),
  # Local/global layers with their own thetas (linear scaling on global ones), QK-norm, MQA.
  "gemma3": lambda: transformers.Gemma3TextConfig(
    **COMMON,
    num_key_value_heads=1,
    head_dim=16,
    sliding_window=5,
    layer_types=SLIDING,
    rope_parameters={
      "sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
      "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0},
    },
  ),
  # Partial rotary and parallel attention + MLP.
  "gpt_neox": lambda: transformers.GPTNeoXConfig(
    **COMMON,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
  ),
}


def save_family(name: str, folder, seed: int = 0) -> transformers.PreTrainedModel:
  """A random checkpoint of family `name` in `folder`; norm gains are randomized too, so a
  wrong (1 + w) or a missing norm shows."""
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(FAMILIES[name]()).float().eval()
  with torch.no_grad():
    for key, p in model.named_parameters():
      if "norm" in key:
        p.add_(0.3 * torch.randn_like(p))
  model.save_pretrained(folder)
  tokenizer_json(folder / "tokenizer.json")
  return model


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.slow
def test_logits_and_greedy_generation_match_transformers(name, tmp_path):
  model = save_family(name, tmp_path)
  lm = pretrained.load(tmp_path)
  assert lm.metadata["source"] == "huggingface" and lm.config.dtype == "float32"
  tokens = np.random.RandomState(0).randint(0, VOCAB, (2, 24))
  with torch.no_grad():
    want = model(torch.tensor(tokens)).logits.numpy()
  got, _ = lm.run(tokens)
  assert np.abs(want).max() > 1  # Large enough that a wrong switch shows.
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)

  prompt = lm.encode("def f(x):")
  assert prompt[0] == 1  # The model's BOS begins every document.
  with torch.no_grad():
    hf_ids = model.generate(
      torch.tensor(prompt[None]), max_new_tokens=10, do_sample=False, pad_token_id=0
    )[0].numpy()
  sampler = sampling.make_sampler(lm.module, 10, temperature=0)
  ours = np.asarray(sampler(lm.params, jnp.asarray(prompt[None]), jax.random.key(0))[0])
  np.testing.assert_array_equal(ours, hf_ids)


def test_sliding_window_and_gqa_hooks_have_their_shapes(tmp_path):
  save_family("gemma3", tmp_path)
  lm = pretrained.load(tmp_path)
  names = lm.hook_names()
  assert "blocks.0.attn.rot_q" in names and "blocks.0.mlp.linear" in names
  assert "blocks.0.attn.proj" in names and "embed.pos" not in names
  _, cache = lm.run(
    np.arange(12)[None],
    capture=["blocks.0.attn.k", "blocks.0.attn.pattern", "blocks.1.attn.pattern"],
  )
  assert cache["blocks.0.attn.k"].shape == (1, 12, 1, 16)  # One KV head.
  local, full = (
    np.asarray(cache["blocks.0.attn.pattern"]),
    np.asarray(cache["blocks.1.attn.pattern"]),
  )
  assert np.all(local[0, :, 11, :7] == 0) and np.all(local[0, :, 11, 7:] > 0)  # Window of 5.
  assert np.all(full[0, :, 11, :] > 0)


@pytest.mark.slow
def test_post_norm_sites_add_up_and_aliases_resolve(tmp_path):
  save_family("gemma2", tmp_path)
  lm = pretrained.load(tmp_path)
  names = ["blocks.1.resid_pre", "blocks.1.attn.out", "blocks.1.resid_mid", "blocks.1.mlp.out"]
  aliases = ["blocks.1.hook_resid_post", "blocks.1.ln2.hook_normalized", "blocks.1.mlp.hook_in"]
  _, cache = lm.run(
    np.arange(10)[None], capture=names + aliases + ["blocks.1.resid_post", "blocks.1.mlp.in"]
  )
  np.testing.assert_allclose(
    cache["blocks.1.resid_mid"], cache["blocks.1.resid_pre"] + cache["blocks.1.attn.out"], atol=1e-5
  )
  np.testing.assert_array_equal(cache["blocks.1.hook_resid_post"], cache["blocks.1.resid_post"])
  np.testing.assert_array_equal(cache["blocks.1.ln2.hook_normalized"], cache["blocks.1.mlp.in"])
  np.testing.assert_array_equal(cache["blocks.1.mlp.hook_in"], cache["blocks.1.mlp.in"])
  # An edit through an alias is the edit at the canonical site.
  zero = lambda x: jnp.zeros_like(x)  # noqa: E731
  a, _ = lm.run(np.arange(10)[None], edits={"blocks.1.hook_mlp_out": zero})
  b, _ = lm.run(np.arange(10)[None], edits={"blocks.1.mlp.out": zero})
  np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_stop_early_runs_only_the_blocks_needed(tmp_path):
  save_family("llama", tmp_path)
  lm = pretrained.load(tmp_path)
  tokens = jnp.asarray(np.arange(10)[None])
  full_logits, full = T.run(lm.module, lm.params, tokens, capture=["blocks.0.resid_post"])
  logits, early = T.run(
    lm.module, lm.params, tokens, capture=["blocks.0.resid_post"], stop_early=True
  )
  assert logits is None and full_logits is not None
  np.testing.assert_array_equal(early["blocks.0.resid_post"], full["blocks.0.resid_post"])
  # The early forward has one block's work: the later blocks' parameters are never read.
  params = dict(lm.params) | {"blocks_1": None, "blocks_2": None, "final_norm": None}
  _, early = T.run(lm.module, params, tokens, capture=["blocks.0.resid_post"], stop_early=True)
  np.testing.assert_array_equal(early["blocks.0.resid_post"], full["blocks.0.resid_post"])


def test_unsupported_family_names_the_supported_ones(tmp_path):
  save_family("llama", tmp_path)
  values = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(
    json.dumps(values | {"model_type": "mamba", "architectures": ["MambaForCausalLM"]})
  )
  with pytest.raises(
    CheckpointError, match="model_type='mamba'.*supported model types: gpt2, llama"
  ):
    pretrained.load(tmp_path)


def test_a_setting_the_converter_does_not_handle_is_refused_by_name(tmp_path):
  save_family("llama", tmp_path)
  values = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(values | {"mlp_bias": True}))
  with pytest.raises(CheckpointError, match=r"mlp_bias=True is not supported"):
    pretrained.load(tmp_path)
  (tmp_path / "config.json").write_text(
    json.dumps(values | {"rope_parameters": {"rope_type": "yarn", "factor": 2.0}})
  )
  with pytest.raises(CheckpointError, match=r"rope type 'yarn'"):
    pretrained.load(tmp_path)


def test_missing_and_unexpected_tensors_are_listed():
  values = FAMILIES["qwen3"]().to_dict()
  model = transformers.AutoModelForCausalLM.from_config(FAMILIES["qwen3"]())
  tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  del tensors["model.layers.1.self_attn.q_norm.weight"]
  tensors["model.layers.7.mlp.up_proj.weight"] = np.zeros((48, 32), np.float32)
  with pytest.raises(CheckpointError) as e:
    families.convert(values, tensors, "the test checkpoint")
  assert "missing tensor model.layers.1.self_attn.q_norm.weight" in str(e.value)
  assert "unexpected tensor model.layers.7.mlp.up_proj.weight" in str(e.value)


def test_large_models_default_to_bfloat16():
  values = FAMILIES["llama"]().to_dict() | {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
  }
  cfg = families.family(values).config(values)
  assert families.parameter_count(cfg) > families.BFLOAT16_ABOVE


def test_gemma3_image_text_checkpoints_load_their_language_model(tmp_path):
  """Gemma 3 4B and up ship as Gemma3ForConditionalGeneration: text_config and nested names."""
  text = {
    k: v
    for k, v in FAMILIES["gemma3"]().to_dict().items()
    if k in COMMON
    or k in ("num_key_value_heads", "head_dim", "sliding_window", "layer_types", "rope_parameters")
  }
  vision = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=28,
    patch_size=14,
  )
  config = transformers.Gemma3Config(
    text_config=text,
    vision_config=vision,
    mm_tokens_per_image=4,
    image_token_index=127,
    boi_token_index=125,
    eoi_token_index=126,
  )
  torch.manual_seed(0)
  model = transformers.Gemma3ForConditionalGeneration(config).eval()
  model.save_pretrained(tmp_path)
  tokenizer_json(tmp_path / "tokenizer.json")
  lm = pretrained.load(tmp_path)
  assert lm.config.qk_norm and lm.config.layer_types == ("sliding", "full", "sliding")
  tokens = np.random.RandomState(1).randint(0, 120, (1, 16))
  with torch.no_grad():
    want = model(input_ids=torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(np.asarray(lm.run(tokens)[0]), want, atol=1e-4, rtol=0)
