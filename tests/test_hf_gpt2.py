"""Hugging Face GPT-2 checkpoints: logit and hook parity with transformers, the tokenizer,
sampling, every error, and the sae_gpt2 main job end to end on a tiny random GPT-2."""

import json
import pickle
import shutil

import numpy as np
import pytest
import tokenizers
import torch
import transformers
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file

from conftest import load_config
from jaxsae import main_job
from jaxsae.errors import CheckpointError
from jaxsae.models import hf_gpt2, pretrained
from jaxsae.text import corpus as corpus_lib

SEP = "<|endoftext|>"
SOURCES = ("textwrap.py", "shlex.py", "string.py", "json/decoder.py", "json/encoder.py")
TEXTS = (
  "def f(x, y):\n    return [x, y]  # pairs\n",
  "class A:\n\tpass\n\n\n\nif __name__ == '__main__':\n        A()\n",
  "naïve café — 日本語, ünïcödé and emoji 🙂🚀",
  "   leading    runs of   spaces\t\ttabs \n\n  and trailing   ",
  "",
)
N_LAYER = 2


def stdlib_text() -> list[str]:
  root = corpus_lib.stdlib_root()
  return [(root / name).read_text(encoding="utf-8") for name in SOURCES]


def train_tokenizer(folder) -> int:
  """A byte-level BPE (GPT-2's recipe, small), saved as vocab.json + merges.txt; its size."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=384,
    special_tokens=[SEP],
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(stdlib_text(), trainer)
  folder.mkdir(parents=True, exist_ok=True)
  tok.model.save(str(folder))
  return tok.get_vocab_size()


def hf_model(vocab_size: int, seed: int = 0, **overrides) -> transformers.GPT2LMHeadModel:
  """A tiny GPT-2 whose every parameter (biases and norms too) is random."""
  config = transformers.GPT2Config(
    n_layer=N_LAYER,
    n_embd=64,
    n_head=4,
    n_positions=64,
    vocab_size=vocab_size,
    bos_token_id=None,
    eos_token_id=None,
    **overrides,
  )
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model


def copy_tokenizer(src, dst):
  dst.mkdir(parents=True, exist_ok=True)
  for name in ("vocab.json", "merges.txt"):
    shutil.copy(src / name, dst / name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(folder, HF model): a tiny random GPT-2 saved by save_pretrained beside its tokenizer."""
  folder = tmp_path_factory.mktemp("hf") / "tiny_gpt2"
  vocab = train_tokenizer(folder)
  model = hf_model(vocab)
  model.save_pretrained(folder, safe_serialization=True)
  return folder, model


def assert_parity(lm, model):
  """Logits, each block's input and the final norm's output agree with transformers."""
  tokens = np.random.default_rng(0).integers(0, lm.config.vocab_size, (2, 64))
  with torch.no_grad():
    out = model(torch.as_tensor(tokens), output_hidden_states=True)
  names = [f"blocks.{i}.resid_pre" for i in range(N_LAYER)] + ["final.normed"]
  logits, captured = lm.run(tokens, capture=names)
  np.testing.assert_allclose(logits, out.logits.numpy(), rtol=0, atol=1e-4)
  assert len(out.hidden_states) == len(names)  # Block inputs, then the final norm's output.
  for name, hidden in zip(names, out.hidden_states, strict=True):
    np.testing.assert_allclose(captured[name], hidden.numpy(), rtol=0, atol=1e-4, err_msg=name)


def test_saved_pretrained_gpt2_matches_transformers(tiny):
  folder, model = tiny
  assert hf_gpt2.is_hf_checkpoint(folder)
  lm = pretrained.load(folder)
  assert lm.config.tied_embeddings and lm.config.d_head == 16 and lm.config.d_mlp == 256
  assert lm.tokenizer.separator_id == 0 and lm.metadata["source"] == "huggingface"
  assert_parity(lm, model)


def test_untied_raw_sharded_and_half_precision_checkpoints(tiny, tmp_path):
  folder, model = tiny
  untied = hf_model(model.config.vocab_size, seed=1, tie_word_embeddings=False)
  untied.save_pretrained(tmp_path / "untied", safe_serialization=True)
  copy_tokenizer(folder, tmp_path / "untied")
  lm = pretrained.load(tmp_path / "untied")
  assert not lm.config.tied_embeddings and "unembed" in lm.params
  assert_parity(lm, untied)

  # As the Hub's gpt2 file: GPT2Model keys (no "transformer."), with the causal-mask buffers.
  body = {k.removeprefix("transformer."): v.numpy() for k, v in model.state_dict().items()}
  body |= {f"h.{i}.attn.bias": np.tril(np.ones((1, 1, 64, 64), np.float32)) for i in range(2)}
  raw = tmp_path / "raw"
  copy_tokenizer(folder, raw)
  shutil.copy(folder / "config.json", raw / "config.json")
  save_file(body, str(raw / "model.safetensors"))
  assert_parity(pretrained.load(raw), model)

  names = sorted(body)  # Two shards and their index, as save_pretrained writes large models.
  (raw / "model.safetensors").unlink()
  shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
  for shard, keys in shards.items():
    save_file({k: body[k] for k in keys}, str(raw / shard))
  index = {"weight_map": {k: s for s, keys in shards.items() for k in keys}}
  (raw / "model.safetensors.index.json").write_text(json.dumps(index))
  assert_parity(pretrained.load(raw), model)

  for dtype in (torch.bfloat16, torch.float16):  # Half-precision weights load as float32.
    (raw / "model.safetensors").unlink(missing_ok=True)
    half = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_torch_file(half, str(raw / "model.safetensors"))
    params = pretrained.load(raw).params
    wte = params["embed"]["embedding"]
    assert wte.dtype == np.float32
    np.testing.assert_array_equal(wte, half["transformer.wte.weight"].float().numpy())


def test_tokenizer_matches_transformers_and_round_trips(tiny):
  folder, _ = tiny
  lm = pretrained.load(folder)
  # transformers 5 reads vocab.json + merges.txt through from_pretrained (a local folder here).
  reference = transformers.GPT2TokenizerFast.from_pretrained(str(folder), local_files_only=True)
  assert len(reference) == lm.tokenizer.vocab_size
  code = stdlib_text()[0][:3000]
  for text in (*TEXTS, code, f"a{SEP}b"):
    ids = lm.tokenizer.encode(text)
    assert ids.tolist() == reference.encode(text), text
    if SEP not in text:
      assert lm.tokenizer.decode(ids) == text
  assert lm.tokenizer.encode(f"a{SEP}b")[1] == lm.tokenizer.separator_id


def test_greedy_generation_matches_transformers(tiny):
  folder, model = tiny
  lm = pretrained.load(folder)
  prompt = "def main(argv):\n    "
  ids = lm.encode(prompt)
  with torch.no_grad():
    out = model.generate(torch.as_tensor(ids)[None], max_new_tokens=8, do_sample=False)
  new = out[0, len(ids) :].numpy()
  assert len(new) == 8
  assert lm.generate(prompt, 8, temperature=0.0) == lm.tokenizer.decode(new)


def test_missing_files_say_where_to_put_what(tiny, tmp_path, monkeypatch):
  folder, _ = tiny
  monkeypatch.setenv("JAXSAE_MODELS", str(tmp_path / "models"))
  assert pretrained.resolve("gpt2") == tmp_path / "models" / "gpt2"
  with pytest.raises(CheckpointError) as info:
    pretrained.load("gpt2")
  message = str(info.value)
  for part in (
    f"{tmp_path / 'models' / 'gpt2'} does not exist",
    "config.json, model.safetensors, vocab.json, merges.txt",
    "openai-community/gpt2",
    "huggingface-cli download openai-community/gpt2 config.json model.safetensors vocab.json "
    f"merges.txt --local-dir {tmp_path / 'models' / 'gpt2'}",
    "JAXSAE_MODELS",
    "--config.harvest.model=FOLDER",
  ):
    assert part in message, (part, message)

  partial = tmp_path / "models" / "gpt2"  # An HF-looking folder without its weights.
  copy_tokenizer(folder, partial)
  shutil.copy(folder / "config.json", partial / "config.json")
  with pytest.raises(CheckpointError, match=r"gpt2 lacks \['model.safetensors'\]"):
    pretrained.load(partial)
  (partial / "vocab.json").unlink()
  (partial / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": 1}))

  def no_unpickling(*args, **kwargs):
    raise AssertionError("pickled weights were loaded")

  monkeypatch.setattr(torch, "load", no_unpickling)
  monkeypatch.setattr(pickle, "load", no_unpickling)
  monkeypatch.setattr(pickle, "loads", no_unpickling)
  with pytest.raises(CheckpointError) as info:
    pretrained.load("gpt2")
  message = str(info.value)
  for part in ("pytorch_model.bin: pickled weights", "safe_serialization=True", "'vocab.json'"):
    assert part in message, (part, message)

  with pytest.raises(CheckpointError, match="expected config.json and model.safetensors"):
    pretrained.load(tmp_path / "nowhere")  # Neither format: both are described.


def test_unsupported_configs_are_rejected_all_at_once(tiny, tmp_path):
  folder, _ = tiny
  values = json.loads((folder / "config.json").read_text())
  bad = dict(
    values,
    model_type="gpt_neo",
    scale_attn_by_inverse_layer_idx=True,
    scale_attn_weights=False,
    add_cross_attention=True,
    activation_function="swish",
  )
  with pytest.raises(CheckpointError, match=r"\(5 problem\(s\)\)") as info:
    hf_gpt2.config_from_hf(bad)
  for field in (
    "model_type='gpt_neo'",
    "scale_attn_by_inverse_layer_idx",
    "scale_attn_weights",
    "add_cross_attention",
    "activation_function='swish'",
  ):
    assert field in str(info.value)
  defaults = {"model_type": "gpt2"}  # Fields left out take GPT2Config's defaults (GPT-2 small).
  small = hf_gpt2.config_from_hf(defaults)
  assert (small.d_model, small.n_layers, small.d_mlp, small.vocab_size) == (768, 12, 3072, 50257)
  assert hf_gpt2.config_from_hf(dict(defaults, activation_function="gelu")).activation == (
    "gelu_exact"
  )

  copy = tmp_path / "bad"
  shutil.copytree(folder, copy)
  (copy / "config.json").write_text(json.dumps(dict(values, add_cross_attention=True)))
  with pytest.raises(CheckpointError, match="add_cross_attention=true"):
    pretrained.load(copy)


def test_missing_wrong_and_corrupt_tensors(tiny, tmp_path):
  folder, model = tiny
  copy = tmp_path / "bad"
  shutil.copytree(folder, copy)
  tensors = {k: v.numpy() for k, v in model.state_dict().items() if k != "lm_head.weight"}
  del tensors["transformer.h.1.mlp.c_fc.bias"]
  tensors["transformer.wpe.weight"] = tensors["transformer.wpe.weight"][:32]
  tensors["transformer.h.2.ln_1.weight"] = np.ones(64, np.float32)
  save_file(tensors, str(copy / "model.safetensors"))
  with pytest.raises(CheckpointError) as info:
    pretrained.load(copy)
  message = str(info.value)
  for part in (
    "(3 problem(s))",
    "missing tensor h.1.mlp.c_fc.bias (256,)",
    "tensor wpe.weight has shape (32, 64), config.json implies (64, 64)",
    "unexpected tensor h.2.ln_1.weight (config.json has n_layer=2)",
  ):
    assert part in message, (part, message)

  data = (folder / "model.safetensors").read_bytes()
  (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointError, match="not a valid safetensors file"):
    pretrained.load(copy)
  (copy / "model.safetensors").write_bytes(b"\xff" * 64)
  with pytest.raises(CheckpointError, match="not a valid safetensors file"):
    pretrained.load(copy)

  for name in ("vocab.json", "merges.txt"):
    (copy / name).unlink()
  with pytest.raises(CheckpointError, match=r"lacks \['vocab.json', 'merges.txt'\]"):
    pretrained.load(copy)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  """A small corpus of stdlib text whose validation and train splits are both non-empty."""
  root = tmp_path_factory.mktemp("corpus")
  text = "\n".join(stdlib_text())
  chunks = [text[i : i + 2500] for i in range(0, len(text), 2500)]
  names = iter(f"doc{i}.py" for i in range(10_000))
  wanted = {"train": 24, "validation": 2, "test": 1}
  while any(wanted.values()):
    name = next(names)
    split = corpus_lib.split_of(name, 0.02, 0.02)
    if wanted[split]:
      wanted[split] -= 1
      (root / name).write_text(chunks[len(list(root.iterdir())) % len(chunks)])
  return root


@pytest.mark.slow
def test_sae_gpt2_config_runs_end_to_end_on_a_tiny_gpt2(tiny, corpus_dir, tmp_path):
  folder, _ = tiny
  config = load_config("sae_gpt2")
  assert (config.harvest.model, config.harvest.hook, config.harvest.seq_len) == (
    "gpt2",
    "blocks.8.resid_post",
    64,
  )
  assert (config.sae.architecture, config.sae.n_latents, config.sae.k) == ("topk", 32768, 32)
  main_job.validate(config)
  config.harvest.update(
    model=str(folder),
    hook="blocks.1.resid_post",
    corpus=str(corpus_dir),
    seq_len=32,
    train_windows=64,
    eval_windows=6,
    chunk_rows=512,
  )
  config.sae.update(n_latents=128, k=8)
  config.train.update(steps=20, batch_size=128, log_every=10, checkpoint_every=20)
  config.data.update(normalization_samples=512, b_dec_samples=256)
  config.optim.warmup_steps = 3
  rows = main_job.run(config, tmp_path)
  assert [r["method"] for r in rows] == ["SAE (topk)", "PCA top-8", "random TopK-8"]
  assert rows[0]["l0"] == pytest.approx(8.0)
  for row in rows:
    assert np.isfinite(row["fvu"]) and np.isfinite(row["delta_ce"])
  assert (tmp_path / "sae" / "config.json").exists()


def test_sae_gpt2_fails_fast_without_the_weights(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSAE_MODELS", str(tmp_path / "models"))
  with pytest.raises(CheckpointError, match="huggingface-cli download openai-community/gpt2"):
    main_job.run(load_config("sae_gpt2"), tmp_path / "run")
  assert not (tmp_path / "run").exists()
