"""Sparse codes, activating contexts, N2G explanations and the HTML feature browser."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_model_config
from jaxsae.activations.store import ActivationStore
from jaxsae.errors import JaxsaeError
from jaxsae.interp import browser, n2g
from jaxsae.interp.contexts import (
  Context,
  SparseCodes,
  contexts,
  sparse_codes_of_store,
  store_context_fn,
)
from jaxsae.models import transformer
from jaxsae.models.language_model import LanguageModel
from jaxsae.text.tokenizer import ByteTokenizer

# 6 rows x 4 latents; latent 3 never fires, latent 2 has a negative entry (nonzero, not firing).
CODES_NxM = np.array(
  [
    [0.0, 2.0, 0.0, 0.0],
    [1.5, 0.0, 0.0, 0.0],
    [0.0, 3.0, 0.5, 0.0],
    [4.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, -1.0, 0.0],
    [2.5, 0.5, 0.0, 0.0],
  ],
  np.float32,
)


def _batches(codes_NxM, sizes):
  start = 0
  for size in sizes:
    yield np.arange(start, start + size), codes_NxM[start : start + size]
    start += size


def test_sparse_codes_streamed_in_batches_match_the_dense_codes():
  sizes = [(6,), (2, 3, 1), (1,) * 6]
  for split in sizes:
    sparse = SparseCodes.from_batches(_batches(CODES_NxM, split))
    assert sparse.n_rows == 6 and sparse.n_latents == 4 and len(sparse.values) == 9
    np.testing.assert_array_equal(sparse.fire_counts(), [3, 4, 1, 0])
    np.testing.assert_allclose(sparse.density(), [0.5, 4 / 6, 1 / 6, 0.0])
    np.testing.assert_array_equal(sparse.fire_counts(threshold=1.0), [3, 2, 0, 0])
    rows, values = sparse.top(0, 2)
    np.testing.assert_array_equal(rows, [3, 5])
    np.testing.assert_array_equal(values, [4.0, 2.5])
    rows, values = sparse.top(1, 10)
    np.testing.assert_array_equal(rows, [2, 0, 3, 5])
    np.testing.assert_array_equal(values, [3.0, 2.0, 1.0, 0.5])
    assert len(sparse.top(3, 5)[0]) == 0
    np.testing.assert_array_equal(sparse.codes_of([3, 0, 4, 3]), CODES_NxM[[3, 0, 4, 3]])
    assert sparse.rows.dtype == np.int64 and sparse.latents.dtype == np.int32


def test_sparse_codes_accept_jax_batches_and_reject_mixed_widths():
  sparse = SparseCodes.from_batches([(np.arange(6), jnp.asarray(CODES_NxM))])
  np.testing.assert_array_equal(sparse.fire_counts(), [3, 4, 1, 0])
  with pytest.raises(JaxsaeError, match="same SAE"):
    SparseCodes.from_batches([(np.arange(2), CODES_NxM[:2]), (np.arange(2), CODES_NxM[:2, :3])])
  with pytest.raises(JaxsaeError, match="no batches"):
    SparseCodes.from_batches([])
  with pytest.raises(JaxsaeError, match="outside"):
    SparseCodes(np.array([0]), np.array([4]), np.array([1.0]), n_rows=1, n_latents=4)


def test_quantile_samples_span_the_activation_distribution():
  values = np.arange(1, 21, dtype=np.float32)  # one latent, 20 rows, value = row + 1
  codes = values[:, None]
  sparse = SparseCodes.from_batches(_batches(codes, [7, 7, 6]))
  bins = sparse.quantile_samples(0, n_bins=4, per_bin=2, seed=3)
  assert len(bins) == 4
  for b, (rows, vals) in enumerate(bins):
    # 20 values in 4 bins: bin b holds the values 5b+1 .. 5b+5.
    assert len(rows) == 2 and np.all((vals >= 5 * b + 1) & (vals <= 5 * b + 5))
    np.testing.assert_array_equal(vals, rows + 1)
    assert vals[0] > vals[1]
  every = sparse.quantile_samples(0, n_bins=4, per_bin=100)
  np.testing.assert_array_equal(np.concatenate([v[::-1] for _, v in every]), values)
  again = sparse.quantile_samples(0, n_bins=4, per_bin=2, seed=3)
  assert all(np.array_equal(a[0], b[0]) for a, b in zip(bins, again, strict=True))
  sparse_few = SparseCodes.from_batches([(np.arange(2), np.array([[1.0], [2.0]]))])
  assert [len(r) for r, _ in sparse_few.quantile_samples(0, n_bins=4, per_bin=3)] == [0, 1, 0, 1]


def _tiny_windows():
  windows_WxT = np.arange(30).reshape(3, 10) + 40
  windows_WxT[:, 0] = 256  # a separator, absent from the rows
  w, p = np.nonzero(windows_WxT != 256)
  rows_table = np.stack([w, p, windows_WxT[w, p]], 1)
  return windows_WxT, rows_table


def test_contexts_hold_the_tokens_and_activations_around_each_row():
  windows_WxT, rows_table = _tiny_windows()
  calls = []

  def latent_codes_fn(window_ids, positions):
    calls.append(len(positions))
    return window_ids * 100.0 + positions

  row_near_start = 9 + 1  # window 1, position 2
  row_near_end = 2 * 9 + 7  # window 2, position 8
  found = contexts(windows_WxT, rows_table, [row_near_start, row_near_end], latent_codes_fn, 3, 2)
  assert calls == [5 + 5]  # one call for every context
  a, b = found
  assert (a.window, a.position, a.focus) == (1, 2, 2)
  assert a.tokens == [256, 51, 52, 53, 54] and a.activations == [100, 101, 102, 103, 104]
  assert (b.window, b.position, b.focus) == (2, 8, 3)
  assert b.tokens == [65, 66, 67, 68, 69] and b.activations == [205, 206, 207, 208, 209]
  assert a.tokens[a.focus] == rows_table[row_near_start, 2] and b.value == 208
  assert contexts(windows_WxT, rows_table, [], latent_codes_fn) == []
  with pytest.raises(JaxsaeError, match="rows table"):
    contexts(windows_WxT, rows_table, [27], latent_codes_fn)


def test_store_contexts_encode_the_stores_rows_and_zero_absent_positions(tmp_path):
  windows_WxT, rows_table = _tiny_windows()
  n = len(rows_table)
  x_NxD = np.stack([np.arange(n) + 1.0, -np.ones(n), np.zeros(n)], 1).astype(np.float32)
  store = ActivationStore.create(
    tmp_path, hooks={"h": 3}, n_rows=n, rows_table=rows_table, windows=windows_WxT, chunk_rows=8
  )
  store.write_rows("h", 0, x_NxD)

  def encode(x_BxD):
    return jnp.maximum(jnp.asarray(x_BxD), 0.0) * 2.0

  # Codes of the second half only: row ids relative to its start.
  start = 9
  sparse = sparse_codes_of_store(store, "h", encode, start=start, batch_size=4)
  assert sparse.n_rows == n - start
  rows, values = sparse.top(0, 1)
  assert rows[0] == n - 1 - start and values[0] == 2.0 * n
  fn = store_context_fn(store, "h", encode, latent=0)
  (ctx,) = contexts(windows_WxT, store.rows_table(start), rows, fn, before=9, after=2)
  assert (ctx.window, ctx.position) == (2, 9)
  assert ctx.tokens == list(windows_WxT[2])
  # Position 0 is the separator: no row, activation 0; row r of the store encodes to 2(r+1).
  assert ctx.activations == [0.0] + [2.0 * (r + 1) for r in range(18, 27)]
  assert ctx.value == values[0]


def _random_split(seed, vocab=12, W=80, T=64):
  rng = np.random.default_rng(seed)
  windows_WxT = rng.integers(0, vocab, (W, T))
  w, p = np.nonzero(np.ones_like(windows_WxT, bool))
  rows_table = np.stack([w, p, windows_WxT[w, p]], 1)
  suffixes = n2g.suffix_tokens(windows_WxT, rows_table, 4)
  n = len(rows_table)
  a_then_b = (suffixes[:, 2] == 3) & (suffixes[:, 3] == 7)
  on_token = suffixes[:, 3] == 5
  a_gap_b = (suffixes[:, 1] == 1) & (suffixes[:, 3] == 2)
  random = rng.random(n) < 0.1
  codes = np.stack([a_then_b, on_token, random, a_gap_b], 1) * rng.uniform(0.5, 2.0, (n, 4))
  sparse = SparseCodes.from_batches(_batches(codes.astype(np.float32), [n // 2, n - n // 2]))
  return sparse, suffixes


def test_suffix_tokens_pad_before_the_window_start():
  windows_WxT, rows_table = _tiny_windows()
  suffixes = n2g.suffix_tokens(windows_WxT, rows_table, 3)
  np.testing.assert_array_equal(suffixes[0], [-1, 256, 41])  # window 0, position 1
  np.testing.assert_array_equal(suffixes[5], [44, 45, 46])
  np.testing.assert_array_equal(suffixes[:, -1], rows_table[:, 2])


def test_n2g_recovers_planted_patterns_and_scores_them_on_held_out_rows():
  sparse_expl, suffix_expl = _random_split(0)
  sparse_held, suffix_held = _random_split(1)
  scores = n2g.explain_and_score_all(sparse_expl, suffix_expl, sparse_held, suffix_held)
  a_then_b, on_token, random, a_gap_b = scores
  assert a_then_b.explanation.patterns == [(3, 7)]
  assert a_then_b.explanation.precision == 1.0 and a_then_b.explanation.recall == 1.0
  assert (a_then_b.precision, a_then_b.recall, a_then_b.f1) == (1.0, 1.0, 1.0)
  assert a_then_b.support == a_then_b.predicted > 0
  assert on_token.explanation.patterns == [(5,)] and on_token.recall == 1.0
  assert a_gap_b.explanation.patterns == [(1, None, 2)] and a_gap_b.f1 == 1.0
  assert random.precision < 0.3 and random.recall < 0.3
  summary = n2g.summarize(scores)
  assert summary["n_scored"] == 4
  assert summary["f1"] == pytest.approx(np.mean([s.f1 for s in scores]))
  # A fire threshold above every activation leaves nothing to explain.
  none = n2g.explain(0, sparse_expl, suffix_expl, fire_threshold=10.0)
  assert none.patterns == [] and none.support == 0


def test_n2g_precision_and_recall_by_hand():
  # Tokens ending at each of 8 rows; rows fire at 0, 1, 2 (row 5's -0.5 is no firing).
  suffixes = np.array(
    [[7, 1, 5], [7, 9, 5], [3, 1, 5], [7, 0, 5], [8, 8, 5], [7, 2, 2], [7, 3, 5], [0, 0, 0]]
  )
  codes = np.zeros((8, 1), np.float32)
  codes[[0, 1, 2], 0] = [1.0, 2.0, 3.0]
  codes[5, 0] = -0.5
  sparse = SparseCodes.from_batches([(np.arange(8), codes)])
  only_5 = n2g.Explanation(0, [(5,)], 0.0, 0.0, 0.0, 0)
  s = n2g.score(only_5, 0, sparse, suffixes)
  # Predicted: rows 0,1,2,3,4,6 (token 5); fires: 0,1,2.
  assert (s.precision, s.recall, s.support, s.predicted) == (0.5, 1.0, 3, 6)
  assert s.f1 == pytest.approx(2 * 0.5 / 1.5)
  seven_gap_5 = n2g.Explanation(0, [(7, None, 5), (3, 1, 5)], 0.0, 0.0, 0.0, 0)
  s = n2g.score(seven_gap_5, 0, sparse, suffixes)
  # Predicted: rows 0,1,3,6 (7 [*] 5) and 2 (3 1 5): 3 of 5 fire.
  assert (s.precision, s.recall, s.predicted) == (0.6, 1.0, 5)
  s = n2g.score(n2g.Explanation(0, [(4,)], 2.5, 0.0, 0.0, 0), 0, sparse, suffixes)
  assert (s.precision, s.recall, s.f1, s.support) == (0.0, 0.0, 0.0, 1)
  with pytest.raises(JaxsaeError, match="same rows table"):
    n2g.score(only_5, 0, sparse, suffixes[:5])
  with pytest.raises(JaxsaeError, match="n >= 4"):
    n2g.score(n2g.Explanation(0, [(1, 2, 3, 5)], 0.0, 0.0, 0.0, 0), 0, sparse, suffixes)


def test_explanations_describe_tokens_visibly():
  tok = ByteTokenizer()
  ex = n2g.Explanation(0, [(ord("d"), None, ord(" "), ord("(")), (-1, 10)], 0.0, 1.0, 1.0, 3)
  assert ex.describe(tok) == "'d' [*] '·' '('  |  [start] '⏎'"
  assert n2g.Explanation(0, [], 0.0, 0.0, 0.0, 0).describe(tok) == "(no pattern)"


def test_decoder_logits_by_hand():
  W_dec = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
  unembed = np.array([[3.0, -1.0, 0.0, 2.0], [0.0, 5.0, -4.0, 1.0]])
  for block in (1, 1024):
    lw = browser.decoder_logits(W_dec, unembed, k=2, block=block)
    np.testing.assert_array_equal(lw.top_ids, [[0, 3], [1, 3], [1, 3]])
    np.testing.assert_array_equal(lw.top_values, [[3, 2], [5, 1], [9, 4]])
    np.testing.assert_array_equal(lw.bottom_ids, [[1, 2], [2, 0], [2, 0]])
    np.testing.assert_array_equal(lw.bottom_values, [[-1, 0], [-4, 0], [-8, 3]])
  with pytest.raises(JaxsaeError, match="do not chain"):
    browser.decoder_logits(W_dec, unembed.T)


@pytest.mark.parametrize("tied", [True, False])
def test_unembedding_maps_the_final_normed_residual_to_the_logits(tied):
  config = tiny_model_config(tied_embeddings=tied, n_layers=1)
  params = transformer.init_params(transformer.Transformer(config), jax.random.key(0))
  lm = LanguageModel(config, params, ByteTokenizer())
  unembed = browser.unembedding(lm)
  assert unembed.shape == (config.d_model, config.vocab_size)
  logits, cache = lm.run(np.arange(6)[None], capture=["final.normed"])
  np.testing.assert_allclose(
    np.asarray(cache["final.normed"]) @ unembed, np.asarray(logits), atol=1e-4
  )


class _EvilTokenizer(ByteTokenizer):
  def token_str(self, token_id):
    return "<script>alert(1)</script>" if token_id == ord("x") else super().token_str(token_id)


def _ctx(text, acts, focus):
  return Context([ord(c) for c in text], list(acts), focus, window=0, position=focus)


def test_browser_writes_escaped_pages_linked_from_sorted_indexes(tmp_path):
  tok = _EvilTokenizer()
  cards = [
    browser.LatentCard(
      latent=3,
      density=0.01,
      scores={"n2g_f1": 0.2},
      top_contexts=[_ctx("a<b&c\n d", [0, 4.0, 0, 0, 0, 0, 2.0, 0], 1)],
      quantile_contexts=[[_ctx("qq", [0, 1.0], 1)], []],
      top_logits=[("<b>", 1.5)],
      bottom_logits=[("z", -2.0)],
      explanation="'<' '&'",
    ),
    browser.LatentCard(
      latent=11,
      density=0.0001,
      scores={"n2g_f1": 0.9},
      top_contexts=[_ctx("oxo", [0, 3.0, 0], 1)],
      top_logits=[("<script>alert(1)</script>", 0.5)],
    ),
  ]
  index = browser.write_browser(tmp_path / "b", cards, tok, title="T <1>")
  assert index == tmp_path / "b" / "index.html"
  by_density = index.read_text()
  by_f1 = (tmp_path / "b" / "index_n2g_f1.html").read_text()
  for page in (by_density, by_f1):
    links = re.findall(r'href="(latents/[^"]+)"', page)
    assert sorted(links) == ["latents/latent_11.html", "latents/latent_3.html"]
    assert "T &lt;1&gt;" in page and "<1>" not in page
  assert by_density.index("latent_3.html") < by_density.index("latent_11.html")
  assert by_f1.index("latent_11.html") < by_f1.index("latent_3.html")
  assert 'href="index_n2g_f1.html"' in by_density and 'href="index.html"' in by_f1
  page3 = (tmp_path / "b" / "latents" / "latent_3.html").read_text()
  # Tokens escaped, whitespace visible, the focus outlined, activations on hover.
  assert "&lt;</span>" in page3 and "&amp;</span>" in page3 and "<b>" not in page3
  assert "⏎</span>" in page3 and "·</span>" in page3
  focus = 'class="t f" style="background: rgba(232, 115, 26, 1.000)" title="&#x27;&lt;&#x27; · 4"'
  assert focus + ">&lt;</span>" in page3 and page3.count('class="t f"') == 2
  assert 'rgba(232, 115, 26, 0.500)" title="&#x27; &#x27; · 2">·</span>' in page3
  assert "&#x27;&lt;&#x27; &#x27;&amp;&#x27;" in page3  # the explanation, escaped
  assert "Quantiles 0.50–1.00" in page3 and "(none)" in page3
  page11 = (tmp_path / "b" / "latents" / "latent_11.html").read_text()
  assert "<script>alert" not in page11
  assert "&gt;alert(1)&lt;/script&gt;</span>" in page11  # the token
  assert '"mono">&lt;script&gt;alert(1)&lt;/script&gt;</td>' in page11  # the logit table
  assert 'href="../index.html"' in page11


def test_make_card_gathers_top_and_quantile_contexts_consistent_with_the_codes():
  windows_WxT, rows_table = _tiny_windows()
  n = len(rows_table)
  codes_NxM = np.zeros((n, 2), np.float32)
  codes_NxM[:, 0] = np.where(np.arange(n) % 3 == 0, np.arange(n) + 1.0, 0.0)
  sparse = SparseCodes.from_batches([(np.arange(n), codes_NxM)])
  lookup = {(int(w), int(p)): r for r, (w, p, _) in enumerate(rows_table)}

  def fn(window_ids, positions):
    rows = [lookup.get((int(w), int(p)), -1) for w, p in zip(window_ids, positions, strict=True)]
    return np.array([codes_NxM[r, 0] if r >= 0 else 0.0 for r in rows])

  logits = browser.decoder_logits(np.eye(2), np.eye(2, 257), k=1)
  card = browser.make_card(
    0, sparse, windows_WxT, rows_table, fn, ByteTokenizer(), n_top=3, n_bins=3, per_bin=2,
    logits=logits, scores={"n2g_f1": 0.5},
  )  # fmt: skip
  assert [c.value for c in card.top_contexts] == [25.0, 22.0, 19.0]
  assert [len(g) for g in card.quantile_contexts] == [2, 2, 2]
  values = [c.value for g in card.quantile_contexts for c in g]
  assert all(v > 0 for v in values) and values[-1] >= values[0]
  assert card.density == pytest.approx(9 / 27)
  assert card.top_logits == [("\\x00", 1.0)] and card.scores == {"n2g_f1": 0.5}
