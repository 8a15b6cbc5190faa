"""Token windows of the corpus a model was trained on (jaxsae.text.model_corpus)."""

import jax
import numpy as np

from conftest import tiny_circuit_config
from jaxsae.models import transformer as T
from jaxsae.models.pretrained import LanguageModel
from jaxsae.text import model_corpus
from jaxsae.text.tokenizer import ByteTokenizer


def test_corpus_windows_packs_a_split(tmp_path):
  for i in range(12):
    (tmp_path / f"f{i}.txt").write_text(f"document {i} " * 20)
  meta = {"corpus": str(tmp_path), "pattern": "*.txt", "seq_len": 16}
  config = tiny_circuit_config()
  params = T.init_params(T.Transformer(config), jax.random.key(0))
  model = LanguageModel(config, params, ByteTokenizer(), meta)
  w = model_corpus.corpus_windows(model, n=5, split="train")
  assert w.shape == (5, 16) and w.dtype == np.int32 and w.max() <= 256
