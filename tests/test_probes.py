"""Probe-loss tasks against tokenize/ast on known snippets, and 1-D probes against brute force."""

import codecs
import keyword

import chex
import numpy as np
import pytest
import tokenizers

from jaxsae.errors import JaxsaeError
from jaxsae.evals import probe_tasks, probes
from jaxsae.evals.probe_tasks import TASKS, label_source, labelled_documents
from jaxsae.text.corpus import stdlib_root
from jaxsae.text.tokenizer import BPETokenizer, ByteTokenizer

SNIPPET = b'''"""Module doc."""
import os, sys
from a.b import (c as d)


@decorator(arg=1)
class Foo(Base, metaclass=M):
    """Class doc."""
    x: int = 3

    def method(self, a: list[int], *args, b=lambda q: q + 1) -> dict[str, int]:
        """Method doc."""
        if a[0] >= 2 and self.y != {1: 2}:  # comment
            return {k: v ** 2 for k, v in zip(a, args)}
        c = f"{a!r} x" + \'\'\'t\'\'\'
        c += 1.5 @ b - len(a) // 3 % 2
        return print(os.path.join("\xc3\xa9", c))
'''


def marked(source: bytes, label: np.ndarray) -> str:
  """The labelled bytes, with '.' for every other byte (newlines kept): easy to read in a diff."""
  return bytes(
    b if on or b == 10 else ord(".") for b, on in zip(source, label, strict=True)
  ).decode("utf-8", errors="replace")


def span(source: bytes, part: bytes, occurrence: int = 0) -> np.ndarray:
  """(len(source),) bool: True on the bytes of the `occurrence`-th `part`."""
  at = -1
  for _ in range(occurrence + 1):
    at = source.index(part, at + 1)
  out = np.zeros(len(source), bool)
  out[at : at + len(part)] = True
  return out


def test_strings_and_comments_match_tokenize():
  source = b'x = "a#b"  # c\n'
  labels = label_source(source)
  np.testing.assert_array_equal(labels["in_string"], span(source, b'"a#b"'))
  np.testing.assert_array_equal(labels["in_comment"], span(source, b"# c"))
  np.testing.assert_array_equal(labels["assignment_operator"], span(source, b"="))
  np.testing.assert_array_equal(labels["name"], span(source, b"x"))
  assert not labels["in_fstring"].any() and not labels["in_docstring"].any()


def test_keywords_names_numbers_and_operators():
  source = b"def f(a):\n    return a + 1 == 2.5 or len(a)\n"
  labels = label_source(source)
  assert marked(source, labels["keyword"]) == "def......\n....return..............or.......\n"
  assert marked(source, labels["name"]) == "....f.a..\n...........a...............len.a.\n"
  assert marked(source, labels["builtin_name"]) == ".........\n...........................len...\n"
  assert marked(source, labels["number"]) == ".........\n...............1....2.5..........\n"
  assert (
    marked(source, labels["arithmetic_operator"])
    == ".........\n.............+...................\n"
  )
  assert (
    marked(source, labels["comparison_operator"])
    == ".........\n.................==..............\n"
  )
  assert marked(source, labels["operator"]) == ".....(.):\n.............+...==...........(.)\n"


def test_bracket_depth_and_innermost_bracket():
  source = b"f(a[1], (2))\nd = {k: [v]}\n"
  labels = label_source(source)
  assert marked(source, labels["bracket_depth_ge1"]) == "..a[1], (2).\n.....k: [v].\n"
  assert marked(source, labels["bracket_depth_ge2"]) == "....1....2..\n.........v..\n"
  assert marked(source, labels["inside_parens"]) == "..a[.], (2).\n............\n"
  assert marked(source, labels["inside_square"]) == "....1.......\n.........v..\n"
  assert marked(source, labels["inside_curly"]) == "............\n.....k: [.].\n"
  assert marked(source, labels["in_call_args"]) == "..a[1], (2).\n............\n"
  assert marked(source, labels["in_subscript"]) == "....1.......\n............\n"


def test_indentation_levels_follow_indent_and_dedent_tokens():
  source = b"def f():\n    def g(\n  x):\n        return x\n    return g\ny = 1\n"
  labels = label_source(source)
  # The continuation line "  x):" belongs to the logical line at level 1.
  assert (
    marked(source, labels["indent_depth_ge1"])
    == "........\n    def g(\n  x):\n        return x\n    return g\n.....\n"
  )
  assert (
    marked(source, labels["indent_depth_ge2"])
    == "........\n..........\n.....\n        return x\n............\n.....\n"
  )
  assert (
    marked(source, labels["line_start_whitespace"])
    == "........\n    ......\n.....\n        ........\n    ........\n.....\n"
  )


def test_def_signature_body_and_annotations():
  source = (
    b"def f(a, b=1):\n    return a\n\n\nasync def g(x: int = lambda: 1) -> dict[str, int]: pass\n"
  )
  labels = label_source(source)
  assert (
    marked(source, labels["in_def_signature"])
    == "def f(a, b=1):\n............\n\n\nasync def g(x: int = lambda: 1) -> dict[str, int]:.....\n"
  )
  assert (
    marked(source, labels["in_function_body"])
    == "..............\n    return a\n\n\n.................................................. pass\n"
  )
  assert (
    marked(source, labels["in_type_annotation"])
    == "..............\n............\n\n\n...............int.................dict[str, int]......\n"
  )
  assert (
    marked(source, labels["in_lambda"])
    == "..............\n............\n\n\n.....................lambda: 1.........................\n"
  )
  assert (
    marked(source, labels["in_return_statement"])
    == "..............\n....return a\n\n\n.......................................................\n"
  )


def test_non_ascii_columns_become_byte_offsets():
  source = 's = "é" + f(ü)  # ü\n'.encode()
  labels = label_source(source)
  np.testing.assert_array_equal(labels["in_string"], span(source, '"é"'.encode()))
  np.testing.assert_array_equal(labels["in_comment"], span(source, "# ü".encode()))
  # ast columns are UTF-8 bytes already: the call's argument is the 2-byte ü.
  np.testing.assert_array_equal(labels["in_call_args"], span(source, "ü".encode()))
  assert labels["in_string"].sum() == 4 and labels["in_comment"].sum() == 4


def test_bom_and_crlf_keep_byte_offsets():
  body = b'x = "s"  # c\r\ny = 1\r\n'
  labels = label_source(codecs.BOM_UTF8 + body)
  assert len(labels["in_string"]) == len(body) + 3
  np.testing.assert_array_equal(labels["in_string"][3:], span(body, b'"s"'))
  np.testing.assert_array_equal(labels["in_comment"][3:], span(body, b"# c"))
  assert not any(labels[task][:3].any() for task in TASKS)


@pytest.mark.parametrize(
  "source",
  [b"def (:\n", b"x = (\n", b'print "py2"\n', b"\xff\xfe = 1\n", "x = 'é'\n".encode("latin-1")],
)
def test_broken_or_undecodable_source_gives_none(source):
  assert label_source(source) is None


def test_every_task_fires_on_a_realistic_snippet():
  labels = label_source(SNIPPET)
  assert tuple(labels) == TASKS and len(TASKS) >= 22
  assert set(TASKS) == set(probe_tasks.TASK_DESCRIPTIONS)
  for task in TASKS:
    chex.assert_shape(labels[task], (len(SNIPPET),))
    assert labels[task].dtype == bool
    assert labels[task].any(), task
    assert not labels[task].all(), task
  for task, part in [
    ("in_docstring", b'"""Class doc."""'),
    ("in_import_statement", b"from a.b import (c as d)"),
    ("in_decorator", b"@decorator(arg=1)"),
    ("in_class_header", b"class Foo(Base, metaclass=M):"),
    ("in_fstring", b'f"{a!r} x"'),
    ("in_triple_quoted_string", b"'''t'''"),
    ("in_comprehension", b"{k: v ** 2 for k, v in zip(a, args)}"),
    ("self_name", b"self"),
    ("attribute_name", b"join"),
  ]:
    assert labels[task][span(SNIPPET, part)].all(), (task, part)
  assert marked(SNIPPET, labels["in_docstring"]).count('"""') == 6  # module, class, method
  assert marked(SNIPPET, labels["attribute_name"]).replace(".", "").split() == ["y", "pathjoin"]
  assert not labels["arithmetic_operator"][SNIPPET.index(b"@decorator")]  # a decorator's @
  assert labels["arithmetic_operator"][SNIPPET.index(b"@ b")]  # matrix multiplication


def test_real_files_label_consistently():
  checks = {
    "keyword": lambda run: run.decode() in keyword.kwlist,
    "in_comment": lambda run: run.startswith(b"#"),
    "in_string": lambda run: run[-1:] in (b'"', b"'"),
    "self_name": lambda run: run == b"self",
    "line_start_whitespace": lambda run: not run.strip(),
  }
  runs = {task: [] for task in checks}
  for path in sorted((stdlib_root() / "json").glob("*.py")):
    source = path.read_bytes()
    labels = label_source(source)
    assert labels is not None, path
    for task in checks:
      edges = np.flatnonzero(np.diff(np.concatenate([[0], labels[task].astype(int), [0]])))
      runs[task] += [source[a:b] for a, b in edges.reshape(-1, 2)]
  for task, check in checks.items():
    assert runs[task] and all(check(run) for run in runs[task]), task


DOCS = [
  b"def f(x):\n    return x + 1  # one\n",
  b"def (:\n",  # broken: skipped
  b'import os\nprint(os.sep, "a")\n' * 3,
  "s = 'é'\n".encode(),
]


def test_labelled_documents_align_labels_with_tokens():
  seq_len = 16
  data = labelled_documents(DOCS, ByteTokenizer(), seq_len, max_windows=100, seed=0)
  sep = ByteTokenizer.separator_id
  assert data.tasks == TASKS
  chex.assert_shape(data.windows, (len(data), seq_len))
  chex.assert_shape(data.labels, (len(data), seq_len, len(TASKS)))
  chex.assert_shape(data.valid, (len(data), seq_len))
  assert data.windows.dtype == np.int32 and data.labels.dtype == bool
  assert 1 not in data.doc_index  # the broken document is skipped
  # Every window of the three good documents: ceil((bytes + 1) / seq_len) each.
  assert len(data) == sum(-(-(len(DOCS[d]) + 1) // seq_len) for d in (0, 2, 3))
  assert not data.valid[data.windows == sep].any()
  assert not data.labels[~data.valid].any()
  for d in (0, 2, 3):
    rows = np.flatnonzero(data.doc_index == d)
    assert data.windows[rows[0], 0] == sep  # a document's first window opens with the separator
    tokens = data.windows[rows].reshape(-1)
    valid = data.valid[rows].reshape(-1)
    assert bytes(tokens[valid].astype(np.uint8)) == DOCS[d]
    expected = np.stack([label_source(DOCS[d])[task] for task in TASKS], axis=1)
    np.testing.assert_array_equal(data.labels[rows].reshape(-1, len(TASKS))[valid], expected)
  # Spot checks on the first document: "return" is a keyword, "# one" a comment.
  first = data.windows[data.doc_index == 0].reshape(-1)
  labels = data.labels[data.doc_index == 0].reshape(-1, len(TASKS))
  at = 1 + DOCS[0].index(b"return")
  assert bytes(first[at : at + 6].astype(np.uint8)) == b"return"
  assert labels[at : at + 6, TASKS.index("keyword")].all()
  assert labels[1 + DOCS[0].index(b"# one"), TASKS.index("in_comment")]


def test_labelled_documents_sample_windows_deterministically():
  a = labelled_documents(DOCS, None, 16, max_windows=3, seed=1)
  b = labelled_documents(DOCS, ByteTokenizer(), 16, max_windows=3, seed=1)
  assert len(a) == 3
  np.testing.assert_array_equal(a.windows, b.windows)
  np.testing.assert_array_equal(a.labels, b.labels)
  others = [labelled_documents(DOCS, None, 16, max_windows=3, seed=s).windows for s in range(2, 8)]
  assert any(o.shape != a.windows.shape or (o != a.windows).any() for o in others)


def test_labelled_documents_with_byte_level_bpe(tmp_path):
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=300,
    special_tokens=["<|endoftext|>"],
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator([d.decode("utf-8", errors="replace") for d in DOCS] * 20, trainer)
  tok.save(str(tmp_path / "tokenizer.json"))
  bpe = BPETokenizer(tmp_path / "tokenizer.json")
  data = labelled_documents(DOCS, bpe, 64, max_windows=10)
  lengths = bpe.token_byte_lengths()
  for row, d in enumerate(data.doc_index):
    ids = data.windows[row][data.valid[row]]
    assert len(ids) < len(DOCS[d])  # merges happened
    starts = np.cumsum(lengths[ids]) - lengths[ids]
    expected = np.stack([label_source(DOCS[d])[task] for task in TASKS], axis=1)[starts]
    np.testing.assert_array_equal(data.labels[row][data.valid[row]], expected)


def test_labelled_documents_errors_name_the_fix():
  with pytest.raises(JaxsaeError, match="Python source"):
    labelled_documents([b"def (:\n", b""], None, 16, max_windows=4)
  with pytest.raises(JaxsaeError, match="seq_len"):
    labelled_documents(DOCS, None, 1, max_windows=4)
  with pytest.raises(JaxsaeError, match="max_windows"):
    labelled_documents(DOCS, None, 16, max_windows=0)


def reference_fit(x, y, l2):
  """(a, b, CE) of the penalized 1-D logistic fit on standardized x, by a zooming grid search
  in float64 (the loss is convex, so shrinking the grid around its minimum converges)."""
  x = (x - x.mean()) / x.std()

  def loss(a, b):
    s = a[..., None] * x + b[..., None]
    ce = np.mean(np.logaddexp(0, s) - y * s, axis=-1)
    return ce + 0.5 * l2 * a**2, ce

  center, radius = np.zeros(2), 8.0
  for _ in range(30):
    grid = np.linspace(-radius, radius, 41)
    a, b = np.meshgrid(center[0] + grid, center[1] + grid, indexing="ij")
    penalized, _ = loss(a, b)
    i, j = np.unravel_index(np.argmin(penalized), penalized.shape)
    center, radius = np.array([a[i, j], b[i, j]]), radius / 4
  return center[0], center[1], float(loss(center[0], center[1])[1])


def test_newton_fit_matches_brute_force():
  rng = np.random.default_rng(0)
  n = 300
  z = np.abs(rng.normal(size=n)) * (rng.random(n) < 0.4)  # sparse, like SAE codes
  y = rng.random(n) < 1 / (1 + np.exp(-(3 * z - 1)))
  l2 = 1e-2
  report = probes.fit_probes(z[:, None], y[:, None], z[:, None], y[:, None], ["t"], l2=l2)
  a, b, ce = reference_fit(z, y, l2)
  assert report.best_latent[0] == 0
  np.testing.assert_allclose(report.train_ce[0], ce, atol=1e-5)
  # Same codes for test: the held-out CE is the train CE of the same probe.
  np.testing.assert_allclose(report.test_ce[0], ce, atol=1e-5)
  # Internals: the slope and intercept themselves.
  fit_a, fit_b, _ = probes._SparseCodes.build(z[:, None].astype(np.float32)).fit(y[:, None], l2, 12)
  np.testing.assert_allclose([fit_a[0, 0], fit_b[0, 0]], [a, b], atol=1e-3)


def synthetic(rng, n, m=64, signal_latent=17):
  """Sparse codes where latent `signal_latent` fires (mostly) on task 0's positives."""
  y = np.stack([rng.random(n) < 0.2, rng.random(n) < 0.4], axis=1)
  z = np.abs(rng.normal(size=(n, m))) * (rng.random((n, m)) < 0.05)
  z[:, signal_latent] = y[:, 0] * (1 + rng.random(n)) + 0.3 * rng.random(n) * (rng.random(n) < 0.1)
  return z.astype(np.float32), y


def test_signal_latent_is_found_and_noise_gives_the_prior():
  rng = np.random.default_rng(0)
  z_train, y_train = synthetic(rng, 4000)
  z_test, y_test = synthetic(rng, 2000)
  report = probes.fit_probes(z_train, y_train, z_test, y_test, ["signal", "noise"])
  assert report.best_latent[0] == 17
  assert report.test_ce[0] < 0.2 * report.prior_ce[0]
  # Task 1 is independent of every latent: the best of 64 only fits noise.
  np.testing.assert_allclose(report.test_ce[1], report.prior_ce[1], rtol=0.02)
  np.testing.assert_allclose(report.positive_rate, y_train.mean(0))
  np.testing.assert_allclose(report.probe_loss, np.mean(report.test_ce))
  rows = report.rows()
  assert [r["task"] for r in rows] == ["signal", "noise"] and rows[0]["best_latent"] == 17


def test_dense_activations_work_as_codes():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3000, 8)).astype(np.float32)  # a dense "neuron basis": no zeros
  y = (x[:, 5] + 0.3 * rng.normal(size=3000) > 0.5)[:, None]
  report = probes.fit_probes(x[:2000], y[:2000], x[2000:], y[2000:], ["t"])
  assert report.best_latent[0] == 5
  assert report.test_ce[0] < 0.5 * report.prior_ce[0]


def test_unprobeable_tasks_and_dead_latents():
  rng = np.random.default_rng(2)
  z = np.zeros((500, 3), np.float32)
  z[:, 1] = 2.0  # constant: no information either
  y = np.stack([rng.random(500) < 0.3, np.zeros(500, bool), np.ones(500, bool)], axis=1)
  report = probes.fit_probes(z, y, z, y, ["a", "all_zero", "all_one"])
  np.testing.assert_array_equal(report.fitted, [True, False, False])
  np.testing.assert_array_equal(report.best_latent[1:], [-1, -1])
  assert np.isnan(report.test_ce[1:]).all() and np.isnan(report.train_ce[1:]).all()
  # Latents that never vary can only learn the base rate: the prior, exactly.
  rate = y[:, 0].mean()
  entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
  np.testing.assert_allclose([report.train_ce[0], report.test_ce[0]], entropy, rtol=1e-5)
  np.testing.assert_allclose(report.prior_ce[0], entropy, rtol=1e-6)
  assert report.probe_loss == pytest.approx(report.test_ce[0])
  assert report.prior_loss == pytest.approx(report.prior_ce[0])


def test_bad_inputs_name_the_problem():
  z, y = np.ones((10, 4), np.float32), np.zeros((10, 1), bool)
  y[:3] = True
  bad = z.copy()
  bad[2, 3] = np.nan
  with pytest.raises(JaxsaeError, match=r"codes_train_NxM holds 1 NaN.*token 2, latent 3"):
    probes.fit_probes(bad, y, z, y, ["t"])
  with pytest.raises(JaxsaeError, match="codes_test_PxM holds 1 NaN"):
    probes.fit_probes(z, y, bad, y, ["t"])
  with pytest.raises(JaxsaeError, match="labels_train_NxT has 9 tokens but codes_train_NxM has 10"):
    probes.fit_probes(z, y[:9], z, y, ["t"])
  with pytest.raises(JaxsaeError, match="one column per task"):
    probes.fit_probes(z, y, z, y, ["t", "u"])
  with pytest.raises(JaxsaeError, match="same SAE"):
    probes.fit_probes(z, y, z[:, :3], y, ["t"])
  with pytest.raises(JaxsaeError, match="2-D"):
    probes.fit_probes(z[None], y, z, y, ["t"])
