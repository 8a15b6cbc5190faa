"""Steering a dense model through a bridge (jaxsae.sparse.bridge_steering): the edit adds exactly
the decoded delta, and the channel search and report on tiny random models."""

import bridge_helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.models.transformer import run
from jaxsae.sparse import bridge_steering
from jaxsae.sparse import bridges as br
from jaxsae.sparse import tasks as tasks_lib

pytestmark = pytest.mark.slow  # Trains models in its fixtures: the full tier only.


@pytest.fixture(scope="module")
def pair():
  return bridge_helpers.dense_and_sparse()


def _quote_task(n: int, seed: int) -> tasks_lib.Task:
  """Random prompts: A ends with ' + random bytes, B with " + the same bytes."""
  rng = np.random.default_rng(seed)
  pairs = []
  for i in range(n):
    body = rng.integers(97, 123, size=9 if i == 0 else int(rng.integers(3, 10))).astype(np.int32)
    a = np.concatenate([[256, 61, 39], body]).astype(np.int32)
    b = np.concatenate([[256, 61, 34], body]).astype(np.int32)
    pairs.append(tasks_lib.ContrastPair(tasks_lib.Example(a, 39), tasks_lib.Example(b, 34)))
  return tasks_lib.Task("closing_quote", "", 39, 34, pairs, "'", '"')


def test_steer_adds_exactly_the_decoded_delta(pair):
  dense, sparse = pair
  site, channel = "blocks.1.resid_mid", 3
  bridges = br.init_bridges(16, 24, [site], 6, jax.random.key(3))
  tokens = np.random.default_rng(2).integers(0, 256, size=(3, 9)).astype(np.int32)
  last = np.array([8, 4, 6])
  clean, _ = run(dense.module, dense.params, tokens)
  h = bridge_steering.last_residuals(sparse, tokens, last, [site])[site]

  unchanged = bridge_steering.steer(
    dense, sparse, bridges, tokens, last, site, channel, h[:, channel]
  )
  np.testing.assert_allclose(unchanged, clean, atol=1e-5)

  value = np.array([2.0, -1.0, 0.5])
  steered = bridge_steering.steer(dense, sparse, bridges, tokens, last, site, channel, value)
  delta = (value - h[:, channel])[:, None] * np.asarray(bridges.weights[site]["W_dec"])[channel]

  def add(x):
    return x.at[jnp.arange(3), last].add(jnp.asarray(delta, jnp.float32))

  want, _ = run(dense.module, dense.params, tokens, edits={site: add})
  np.testing.assert_allclose(steered, want, atol=1e-4)
  assert np.abs(steered - np.asarray(clean)).max() > 1e-3
  for row, t in enumerate(last):  # Causal: positions before `last` cannot change.
    np.testing.assert_allclose(steered[row, :t], np.asarray(clean)[row, :t], atol=1e-5)


def test_find_channel_and_steering_report(pair):
  dense, sparse = pair
  sites = ("blocks.0.resid_post", "blocks.1.resid_post")
  task = _quote_task(8, 0)  # Prompts of 12 tokens at most, like _quote_task(8, 1)'s.
  stats = bridge_steering.channel_stats(sparse, task, sites)
  batch = task.batch()
  h = bridge_steering.last_residuals(
    sparse,
    np.concatenate([batch.tokens_a, batch.tokens_b]),
    np.concatenate([batch.last_a, batch.last_b]),
    sites,
  )
  for s in sites:
    a, b = h[s][:8].astype(np.float64), h[s][8:].astype(np.float64)
    pooled = np.sqrt((a.var(0, ddof=1) + b.var(0, ddof=1)) / 2)  # Equal class sizes.
    score = np.abs(a.mean(0) - b.mean(0)) / pooled
    np.testing.assert_allclose(stats[s].score, score, rtol=1e-4)
    assert stats[s].channel == int(np.argmax(score))
  assert bridge_steering.find_channel(sparse, task, sites[1]) == stats[sites[1]].channel

  bridges = br.init_bridges(16, 24, sites, 6, jax.random.key(4))
  report = bridge_steering.steering_report(
    dense, sparse, bridges, task, _quote_task(8, 1), n_controls=2
  )
  assert [r["site"] for r in report["sites"]] == list(sites)
  for row in report["sites"]:
    assert row["channel"] == stats[row["site"]].channel
    assert row["channel"] not in row["control_channels"] and len(row["control_channels"]) == 2
    assert 0 <= row["flip_rate"] <= 1 and 0 <= row["control_flip_rate"] <= 1
  ref = report["sparse_reference"]
  assert ref["site"] == report["best_site"] and 0 <= ref["flip_rate"] <= 1
  p = report["prompts"]
  assert len(p["before_a"]) == len(p["after_b"]) == 8 and p["site"] == report["best_site"]
