"""NaN or Inf in SAE and LM training, found at the step it happens: train.on_nonfinite="stop"
names the step, the batch, the terms and the last good checkpoint and saves nothing after it;
"skip" leaves the state unchanged for that batch, counts it in the metrics and goes on."""

import warnings

import grain
import jax
import numpy as np
import pytest

from conftest import load_config
from jaxsae import nonfinite
from jaxsae.checkpoint import Checkpointer, CheckpointFallbackWarning
from jaxsae.errors import ConfigError, JaxsaeError
from jaxsae.lm import config as lm_config
from jaxsae.lm import train as lm_train
from jaxsae.run_log import read_jsonl
from jaxsae.sae import row_sources, synthetic, train_config
from jaxsae.sae import train as sae_train
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import pipeline

ROWS = synthetic.SyntheticFeatures(d=16, n_features=32, active=3, noise=0.05).generate(4096)
BAD = 5  # Index in the data stream of the first poisoned SAE batch: step BAD + 1 sees it.


def sae_config(**train):
  c = train_config.base_config()
  c.sae.n_latents, c.sae.k, c.sae.k_aux = 64, 4, 0
  c.train.batch_size, c.train.steps, c.train.log_every, c.train.checkpoint_every = 128, 8, 1, 4
  c.train.keep_checkpoints = 10
  c.optim.warmup_steps, c.data.normalization_samples, c.data.b_dec_samples = 2, 1024, 256
  c.train.update(train)
  return c


def sae_rows() -> np.ndarray:
  """ROWS with a NaN row in batch BAD and a 1e30 row (finite, but its square is Inf) in batch
  BAD + 1, both outside the normalization sample."""
  c = sae_config()
  positions = row_sources.ArraySource(np.arange(len(ROWS), dtype=np.float32)[:, None])
  stream = row_sources.train_batches(positions, c.train.batch_size, seed=c.seed)
  batches = [next(stream)[:, 0].astype(int) for _ in range(BAD + 2)]
  sampled = row_sources.sample(positions, c.data.normalization_samples, c.seed)[:, 0].astype(int)
  rows = ROWS.copy()
  rows[np.setdiff1d(batches[BAD], sampled)[0]] = np.nan
  rows[np.setdiff1d(batches[BAD + 1], sampled)[0]] = 1e30
  return rows


def _checkpointed_states(workdir, state, steps):
  target = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state
  )
  with Checkpointer(workdir / "checkpoints", save_every=1) as ckpt:
    return [jax.device_get(ckpt.restore(target, step=s)[0]) for s in steps]


def _assert_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
def test_sae_stop_names_the_batch_then_skip_resumes_and_skips_it(tmp_path):
  source = row_sources.ArraySource(sae_rows())
  with pytest.raises(JaxsaeError) as info:
    sae_train.train(sae_config(), tmp_path, source)
  text = str(info.value)
  assert f"NaN or Inf in the activations of batch {BAD} of the training data stream" in text
  assert f"(rows {BAD * 128}-{BAD * 128 + 127}), at step {BAD + 1}" in text
  assert "the last checkpoint is step 4 (good: a rerun resumes there)" in text
  assert "train.on_nonfinite='skip'" in text
  with Checkpointer(tmp_path / "checkpoints", save_every=1) as ckpt:
    assert ckpt.all_steps() == [4]  # Nothing after the bad step was saved.

  # The same run with "skip" resumes from step 4 (cleanly: the checkpoint is intact) and skips
  # both bad batches: the NaN activations and the overflowing loss.
  config = sae_config(on_nonfinite="skip", checkpoint_every=1)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = sae_train.train(config, tmp_path, source)
  assert not [w for w in caught if w.category is CheckpointFallbackWarning]
  messages = [str(w.message) for w in caught if w.category is nonfinite.NonFiniteWarning]
  assert len(messages) == 2, messages
  assert messages[0].startswith(f"skipped step {BAD + 1} (batch {BAD} of the training data")
  assert "NaN or Inf in the activations" in messages[0]
  assert messages[1].startswith(f"skipped step {BAD + 2} (batch {BAD + 1} of the training data")
  assert "non-finite loss terms or gradients (topk: grad_norm, loss/reconstruction" in messages[1]
  before, *skipped = _checkpointed_states(tmp_path, result.state, [BAD, BAD + 1, BAD + 2])
  for after in skipped:
    for part in ("params", "opt_state", "extras"):
      _assert_equal(getattr(before, part), getattr(after, part))
  assert [int(s.step) for s in skipped] == [BAD + 1, BAD + 2]
  assert [(h["step"], h["skipped_batches"]) for h in result.history] == [
    (5, 0),
    (6, 1),
    (7, 2),
    (8, 2),
  ]
  assert np.isfinite(result.history[-1]["loss/total"])
  assert read_jsonl(tmp_path / "metrics.jsonl", "train")[-1]["skipped_batches"] == 2


def lm_tiny(**train):
  config = load_config("lm_tiny")
  config.model.n_layers = 1
  config.data.corpus = str(corpus_lib.stdlib_root() / "asyncio")
  config.data.validation_fraction = config.data.test_fraction = 0.15
  config.train.update(dict(eval_every=0, steps=6, log_every=1, checkpoint_every=2))
  config.train.keep_checkpoints = 10
  config.train.update(train)
  return config


@pytest.fixture
def nan_weight_in_batch_2(monkeypatch):
  """The real training stream, with one NaN sequence weight in batch 2 (step 3)."""

  def train_batches(windows, batch_size, *, seed, process_index=0, process_count=1):
    ds = grain.MapDataset.source(windows).shuffle(seed=seed).repeat()
    ds = ds[process_index::process_count].batch(batch_size // process_count, drop_remainder=True)

    def weigh(index, tokens):
      weights = np.ones(tokens.shape[0], np.float32)
      weights[0] = np.nan if index == 2 else 1.0
      return {"tokens": tokens, "weights": weights}

    return iter(ds.map_with_index(weigh).to_iter_dataset())

  monkeypatch.setattr(pipeline, "train_batches", train_batches)


@pytest.mark.slow
def test_lm_stop_names_the_batch_then_skip_resumes_and_skips_it(tmp_path, nan_weight_in_batch_2):
  with pytest.raises(JaxsaeError) as info:
    lm_train.train_and_evaluate(lm_tiny(), tmp_path)
  text = str(info.value)
  assert "non-finite loss, grad_norm at step 3, on batch 2 of the training data stream" in text
  assert "(tokens 2048-3071)" in text  # 16 sequences of 64 tokens per batch.
  assert "the last checkpoint is step 2 (good: a rerun resumes there)" in text
  with Checkpointer(tmp_path / "checkpoints", save_every=1) as ckpt:
    assert ckpt.all_steps() == [2]

  config = lm_tiny(on_nonfinite="skip", checkpoint_every=1)
  with pytest.warns(nonfinite.NonFiniteWarning, match="skipped step 3 .*non-finite loss"):
    result = lm_train.train_and_evaluate(config, tmp_path, stop_at_step=5)
  before, after = _checkpointed_states(tmp_path, result.state, [2, 3])
  _assert_equal(before.params, after.params)
  _assert_equal(before.opt_state, after.opt_state)
  assert [(h["step"], h["skipped_batches"]) for h in result.history] == [(3, 1), (4, 1), (5, 1)]
  assert np.isfinite(result.history[-1]["loss"])
  assert read_jsonl(tmp_path / "metrics.jsonl", "train")[-1]["skipped_batches"] == 1


def test_a_bad_on_nonfinite_value_is_rejected_with_the_choices():
  sae = sae_config(on_nonfinite="skp")
  with pytest.raises(
    ConfigError, match=r"train.on_nonfinite='skp' is not one of \['stop', 'skip'\]"
  ):
    train_config.validate(sae)
  lm = lm_config.base_config()
  lm.train.on_nonfinite = "ignore"
  with pytest.raises(ConfigError, match=r"train.on_nonfinite='ignore' is not one of"):
    lm_config.validate(lm)
