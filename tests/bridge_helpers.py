"""Shared by tests/test_bridges.py and tests/test_bridge_steering.py: a tiny dense and a tiny
weight-sparse language model, randomly initialised."""

import functools

import jax

from jaxsae.models.config import TransformerConfig
from jaxsae.models.pretrained import LanguageModel
from jaxsae.models.transformer import Transformer, init_params
from jaxsae.text.tokenizer import ByteTokenizer

_SHAPE = dict(vocab_size=257, n_layers=2, n_heads=2, d_head=8, d_mlp=32, max_len=16)


def _lm(d_model: int, topk: float, seed: int) -> LanguageModel:
  config = TransformerConfig(d_model=d_model, activation_topk_fraction=topk, init_std=0.2, **_SHAPE)
  return LanguageModel(
    config, init_params(Transformer(config), jax.random.key(seed)), ByteTokenizer()
  )


@functools.cache
def dense_and_sparse() -> tuple[LanguageModel, LanguageModel]:
  """A dense model (d 16) and a sparse one (d 24, AbsTopK 1/4), randomly initialised."""
  return _lm(16, 0.0, 0), _lm(24, 0.25, 1)
