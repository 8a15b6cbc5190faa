"""Saved models: round trip, validation of what is loaded, and the shipped default model."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_model_config
from jaxsae.errors import CheckpointError
from jaxsae.lm.baselines import NGramBaselines
from jaxsae.lm.report import evaluate_model
from jaxsae.models import pretrained
from jaxsae.models import transformer as T
from jaxsae.models.sampling import make_sampler
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import pipeline
from jaxsae.text.tokenizer import ByteTokenizer


@pytest.fixture
def saved(tmp_path):
  cfg = tiny_model_config(attention_sink=True, bigram_table=True)
  params = T.init_params(T.Transformer(cfg), jax.random.key(0))
  path = pretrained.save(tmp_path / "m", cfg, params, ByteTokenizer(), {"note": "test"})
  return path, cfg, params


@pytest.mark.slow
def test_save_load_round_trip(saved):
  path, cfg, params = saved
  lm = pretrained.load(path)
  assert lm.config == cfg and lm.metadata == {"note": "test"}
  jax.tree.map(np.testing.assert_array_equal, lm.params, params)
  tokens = lm.encode("x = [1, 2]")
  assert tokens[0] == lm.tokenizer.separator_id
  logits, cap = lm.run(tokens, capture=["blocks.1.resid_post"])
  np.testing.assert_allclose(
    logits, T.Transformer(cfg).apply({"params": params}, tokens[None]), atol=1e-6
  )
  assert cap["blocks.1.resid_post"].shape == (1, len(tokens), cfg.d_model)


def test_loading_rejects_missing_corrupt_and_mismatched_files(saved, tmp_path):
  path, cfg, _ = saved
  with pytest.raises(CheckpointError, match="expected config.json and model.safetensors"):
    pretrained.load(tmp_path / "nowhere")
  doc = json.loads((path / "config.json").read_text())
  doc["model"]["d_mlp"] = 128
  (path / "config.json").write_text(json.dumps(doc))
  with pytest.raises(
    CheckpointError, match=r"fc_in/kernel has shape \(32, 64\), the config implies \(32, 128\)"
  ):
    pretrained.load(path)
  doc["model"]["d_mlp"], doc["format"] = 64, "jaxsae-lm/99"
  (path / "config.json").write_text(json.dumps(doc))
  with pytest.raises(CheckpointError, match="'jaxsae-lm/99', written by a newer jaxsae"):
    pretrained.load(path)
  doc["format"] = pretrained.FORMAT
  (path / "config.json").write_text(json.dumps(doc))
  data = (path / "model.safetensors").read_bytes()
  (path / "model.safetensors").write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointError, match="not a readable safetensors file"):
    pretrained.load(path)
  (path / "config.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="not valid JSON"):
    pretrained.load(path)


@pytest.mark.slow
def test_greedy_sampling_equals_repeated_argmax_with_a_sliding_window(saved):
  path, cfg, params = saved
  lm = pretrained.load(path)
  model = T.Transformer(cfg)  # max_len 32: 40 new tokens slide the window.
  prompt = lm.encode("def f(x, y):\n    return [x, y]")[:30]
  out = make_sampler(model, 40, temperature=0.0)(
    params, jnp.asarray(prompt)[None], jax.random.key(0)
  )
  forward = jax.jit(lambda t: model.apply({"params": params}, t))
  tokens = list(prompt)
  for _ in range(40):
    window = jnp.asarray(tokens[-cfg.max_len :])[None]
    tokens.append(int(jnp.argmax(forward(window)[0, -1])))
  assert out[0].tolist() == tokens


@pytest.mark.slow
def test_sampling_is_seeded_and_edits_steer_it(saved):
  path, _, _ = saved
  lm = pretrained.load(path)
  a, b = lm.generate("import ", 20, seed=1), lm.generate("import ", 20, seed=1)
  assert a == b and a != lm.generate("import ", 20, seed=2)
  steer = lm.params["embed"]["embedding"][ord("z")] * 500.0
  steered = lm.generate("import ", 20, temperature=0.0, edits={"final.normed": lambda x: x + steer})
  assert steered == "z" * 20


@pytest.mark.slow
def test_the_shipped_model_beats_the_bigram_baseline_on_the_test_split():
  lm = pretrained.load("default")
  corpus = corpus_lib.discover()
  seq_len = lm.config.max_len
  test = pipeline.load_split(corpus, "test", lm.tokenizer, seq_len)
  n = 64
  model = evaluate_model(lm, test.windows, max_sequences=n)
  baselines = NGramBaselines(
    pipeline.load_split(corpus, "train", lm.tokenizer, seq_len).stream, lm.config.vocab_size
  )
  baselines.fit_lambda(pipeline.load_split(corpus, "validation", lm.tokenizer, seq_len).stream)
  bigram = baselines.evaluate(test.stream[: n * seq_len + 1], lm.tokenizer.token_byte_lengths())[
    "bigram"
  ]
  assert model.tokens == n * seq_len
  assert model.bits_per_byte < bigram.bits_per_byte - 0.5, (model, bigram)
  assert (
    lm.metadata["test_report"]["model"]["bits_per_byte"]
    < lm.metadata["test_report"]["bigram"]["bits_per_byte"]
  )
