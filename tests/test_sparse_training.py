"""Weight-sparse LM training through the shared LM loop: exact kept fractions after annealing,
sparsity statistics logged, a finite loss that falls, and the shipped configs valid."""

import numpy as np
import pytest

from conftest import load_config
from experiments.configs.lm_sparse import VARIANTS
from jaxsae.errors import ConfigError
from jaxsae.lm import config as lm_config
from jaxsae.lm import export
from jaxsae.lm import train as lm_train
from jaxsae.models import pretrained
from jaxsae.sparse import projection
from jaxsae.text.corpus import stdlib_root


def tiny_sparse_config():
  c = load_config("lm_tiny")
  c.model.norm = "rmsnorm"
  c.model.tied_embeddings = False
  c.model.bigram_table = True
  c.model.activation_topk_fraction = 0.25
  c.data.corpus = str(stdlib_root() / "json")
  c.data.validation_fraction = 0.2
  c.data.test_fraction = 0.2
  c.train.steps = 24
  c.train.log_every = 4
  c.train.eval_every = 0
  c.train.eval_sequences = 16
  c.train.checkpoint_every = 100
  c.sparsity.enabled = True
  c.sparsity.hidden_fraction = 1 / 8
  c.sparsity.embedding_fraction = 1 / 2
  c.sparsity.min_per_neuron = 2
  c.optim.lr = 1e-2
  return c


@pytest.mark.slow
def test_sparse_training_reaches_the_target_fractions_and_logs_them(tmp_path):
  result = lm_train.train_and_evaluate(tiny_sparse_config(), tmp_path)
  params = result.state.params
  for path, w in projection_items(params):
    kind = projection.matrix_kind(path, w.ndim)
    if kind is None:
      continue
    target = 1 / 8 if kind == projection.HIDDEN else 1 / 2
    assert np.count_nonzero(np.asarray(w)) == round(target * w.size), path
  last = result.history[-1]
  assert last["nonzero_fraction/hidden"] == pytest.approx(1 / 8, rel=1e-3)
  assert "dead_neurons" in last and np.isfinite(last["loss"])
  assert result.history[-1]["loss"] < result.history[0]["loss"]
  # The annealing was dense at first: the first record has more nonzeros than the target.
  assert result.history[0]["nonzero_fraction/hidden"] > 0.5
  # The workdir exports (its checkpoint holds the sparse optimizer's state) and reloads.
  export.export(tmp_path, tmp_path / "model")
  lm = pretrained.load(tmp_path / "model")
  exported, trained = projection_items(lm.params), projection_items(params)
  assert [p for p, _ in exported] == [p for p, _ in trained]
  for (path, got), (_, want) in zip(exported, trained, strict=True):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=path)


def projection_items(params):
  import jax

  return [
    ("/".join(str(getattr(k, "key", k)) for k in path), w)
    for path, w in jax.tree_util.tree_flatten_with_path(params)[0]
  ]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_sparse_and_dense_configs_are_valid(variant):
  c = load_config("lm_sparse", variant)
  lm_config.validate(c)
  d_model, fraction = VARIANTS[variant]
  assert c.model.d_model == d_model and c.model.n_heads * c.model.d_head == d_model
  assert c.sparsity.enabled == (fraction is not None)
  if fraction is not None:  # The per-neuron minimum fits every hidden matrix's budget.
    assert c.sparsity.min_per_neuron * d_model <= fraction * d_model * d_model


def test_bad_sparsity_settings_are_refused_before_training():
  c = tiny_sparse_config()
  c.sparsity.hidden_fraction = 1.5
  with pytest.raises(ConfigError, match="hidden_fraction"):
    lm_config.validate(c)
