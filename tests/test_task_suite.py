"""The circuit task suite (jaxsae.sparse.task_suite): pairs cut from real code, templated pairs,
nonsense controls, and the errors that name their fix."""

import collections
import io
import re
import tokenize

import numpy as np
import pytest

from jaxsae.errors import JaxsaeError
from jaxsae.sparse import task_suite
from jaxsae.sparse.task_suite import (
  NONSENSE_SUFFIX,
  TASK_NAMES,
  build_suite,
  build_task,
  extract_pairs,
  nonsense,
)
from jaxsae.text import corpus
from jaxsae.text.tokenizer import ByteTokenizer

N_PAIRS, MAX_LEN = 16, 128

SNIPPET = b"""import os


class Box:
    size = {'w': 1, 'h': 2}

    def area(self, scale):
        if scale == 2:
            return [[self.size]]
        for k in os.sep:
            total = [1, 2]
        return f(scale)

    @classmethod
    def make(cls):
        return "box"
"""


def upto(marker: bytes, source: bytes = SNIPPET) -> bytes:
  """The source up to the end of the (only) occurrence of `marker`."""
  assert source.count(marker) == 1, marker
  return source[: source.index(marker) + len(marker)]


@pytest.fixture(scope="module")
def docs():
  return corpus.discover("stdlib", "**/*.py", 0.02, 0.02).read("validation")


@pytest.fixture(scope="module")
def suite(docs):
  return build_suite(docs, ByteTokenizer(), N_PAIRS, MAX_LEN, seed=0)


def text(ids) -> str:
  """A prompt without its leading separator, as text."""
  return bytes(np.asarray(ids[1:], np.uint8)).decode("utf-8")


def last_line(ids) -> str:
  return text(ids).rsplit("\n", 1)[-1]


def last_string_token(line: str) -> str | None:
  """The last STRING token of a line of code (tokens after a tokenize error are lost)."""
  found = None
  try:
    for t in tokenize.generate_tokens(io.StringIO(line.lstrip() + "\n").readline):
      if t.type == tokenize.STRING:
        found = t.string
  except (tokenize.TokenError, IndentationError):
    pass
  return found


def byte_diff(a: bytes, b: bytes) -> tuple[bytes, bytes]:
  """The differing middle parts of a and b, once their common prefix and suffix are removed."""
  lo = 0
  while lo < min(len(a), len(b)) and a[lo] == b[lo]:
    lo += 1
  hi = 0
  while hi < min(len(a), len(b)) - lo and a[len(a) - 1 - hi] == b[len(b) - 1 - hi]:
    hi += 1
  return a[lo : len(a) - hi], b[lo : len(b) - hi]


def test_suite_has_every_task_and_its_control(suite):
  assert len(TASK_NAMES) >= 8
  assert set(suite) == set(TASK_NAMES) | {n + NONSENSE_SUFFIX for n in TASK_NAMES}
  assert task_suite.TEMPLATED_TASKS == ("variable_type",)
  for name in TASK_NAMES:
    assert suite[name].source == ("template" if name == "variable_type" else "corpus")
    assert suite[name + NONSENSE_SUFFIX].control_of == name


@pytest.mark.parametrize("name", TASK_NAMES)
def test_pairs_are_well_formed(suite, name):
  task, tokenizer = suite[name], ByteTokenizer()
  assert len(task) == N_PAIRS
  assert [int(i) for i in tokenizer.encode(task.tok_text)] == [task.tok]
  assert [int(i) for i in tokenizer.encode(task.alt_text)] == [task.alt]
  assert task.tok != task.alt
  prompts = set()
  for pair in task.pairs:
    assert pair.a.answer == task.tok and pair.b.answer == task.alt
    for e in (pair.a, pair.b):
      assert 2 <= len(e.prompt_ids) <= MAX_LEN
      assert e.prompt_ids.dtype == np.int32
      assert e.prompt_ids[0] == tokenizer.separator_id
      assert (e.prompt_ids[1:] < 256).all()
    a, b = (
      bytes(pair.a.prompt_ids[1:].astype(np.uint8)),
      bytes(pair.b.prompt_ids[1:].astype(np.uint8)),
    )
    assert a != b
    prompts.add((a, b))
    if name != "variable_type":
      assert pair.origin in ("a", "b")
  assert len(prompts) == N_PAIRS  # no duplicate pairs
  if name in ("closing_quote", "closing_bracket_type", "header_colon", "eq_vs_assign"):
    # Both kinds of verbatim site are common: the pairs are balanced between them.
    assert collections.Counter(p.origin for p in task.pairs) == {"a": 8, "b": 8}


def test_closing_quote_prompts_end_inside_an_open_literal(suite):
  task = suite["closing_quote"]
  for pair in task.pairs:
    for e, quote in ((pair.a, "'"), (pair.b, '"')):
      line = last_line(e.prompt_ids)
      opening = max(line.rfind("'"), line.rfind('"'))
      assert line[opening] == quote, line
      assert line[opening + 1 :] and not re.search(r"['\"\\]", line[opening + 1 :]), line
      # Closing it with the answer completes the line's last string literal.
      literal = last_string_token(line + quote)
      assert literal is not None and literal.endswith(line[opening:] + quote), line
    a, b = byte_diff(text(pair.a.prompt_ids).encode(), text(pair.b.prompt_ids).encode())
    assert (a, b) == (b"'", b'"')


def test_edits_are_minimal_and_decide_the_answer(suite):
  for pair in suite["closing_bracket_type"].pairs:
    a, b = byte_diff(text(pair.a.prompt_ids).encode(), text(pair.b.prompt_ids).encode())
    assert (a, b) == (b"(", b"[")
  for pair in suite["dict_vs_list"].pairs:
    a, b = byte_diff(text(pair.a.prompt_ids).encode(), text(pair.b.prompt_ids).encode())
    assert (a, b) == (b"{", b"[")
  for pair in suite["bracket_depth"].pairs:
    a, b = text(pair.a.prompt_ids), text(pair.b.prompt_ids)
    assert a.endswith("]") and b.endswith("]")
    assert byte_diff(a.encode(), b.encode())[1] == b"" and a.count("[") == b.count("[") + 1
  for pair in suite["header_colon"].pairs:
    assert re.fullmatch(r"\s*(if|elif|while) .+", last_line(pair.a.prompt_ids))
    assert re.fullmatch(r"\s*return .+", last_line(pair.b.prompt_ids))
  for pair in suite["eq_vs_assign"].pairs:
    assert re.fullmatch(r"\s*(if|elif|while) [\w.]+ =", last_line(pair.a.prompt_ids))
    assert re.fullmatch(r"\s*[\w.]+ =", last_line(pair.b.prompt_ids))
  for pair in suite["for_in"].pairs:
    assert re.fullmatch(r"\s*for \w+ ", last_line(pair.a.prompt_ids))
    assert re.fullmatch(r"\s*\w+ ", last_line(pair.b.prompt_ids))
  for pair in suite["self_in_method"].pairs:
    a, b = text(pair.a.prompt_ids).split("\n"), text(pair.b.prompt_ids).split("\n")
    assert re.fullmatch(r"\s+def \w+\(", a[-1]) and a[-1] == b[-1]
    assert b[-2].strip() == "@classmethod"
    assert len(a) == 1 or a[-2].strip() != "@classmethod"  # the window may start at the def
  for pair in suite["variable_type"].pairs:
    a, b = text(pair.a.prompt_ids), text(pair.b.prompt_ids)
    var = re.search(r"\n    (\w+) = set\(\)\n", a)[1]
    assert re.search(rf"\n    {var} = (''|\"\")\n", b)
    assert a.endswith(" " + var) and last_line(pair.a.prompt_ids) == last_line(pair.b.prompt_ids)
    assert pair.origin == "template"


def test_extraction_on_a_known_snippet():
  def swap(prompt: bytes, old: bytes, new: bytes) -> bytes:
    """`prompt` with the last occurrence of `old` replaced by `new`."""
    at = prompt.rindex(old)
    return prompt[:at] + new + prompt[at + len(old) :]

  start = upto(b"class Box:")[: -len(b"class Box:")]  # 'import os\n\n\n'
  box = upto(b'return "box')
  assert extract_pairs("closing_quote", SNIPPET) == [
    (upto(b"{'w"), swap(upto(b"{'w"), b"'w", b'"w')),
    (upto(b"'h"), swap(upto(b"'h"), b"'h", b'"h')),
    # The window ends at the cut and starts at the first logical line that fits 255 bytes.
    (swap(box, b'"box', b"'box")[len(start) :], box[len(start) :]),
  ]
  assert extract_pairs("bracket_depth", SNIPPET) == [
    (upto(b"[[self.size]"), swap(upto(b"[[self.size]"), b"[[", b"[")),
    (swap(upto(b"[1, 2]"), b"[1", b"[[1"), upto(b"[1, 2]")),
  ]
  assert extract_pairs("closing_bracket_type", SNIPPET) == [
    (swap(upto(b"[[self.size"), b"[self", b"(self"), upto(b"[[self.size")),
    (swap(upto(b"[[self.size]"), b"[[", b"(["), upto(b"[[self.size]")),
    (swap(upto(b"[1, 2"), b"[1", b"(1"), upto(b"[1, 2")),
    (upto(b"f(scale"), swap(upto(b"f(scale"), b"(", b"[")),
  ]
  assert extract_pairs("dict_vs_list", SNIPPET) == [
    (upto(b"{'w'"), swap(upto(b"{'w'"), b"{", b"[")),
    (swap(upto(b"[1"), b"[", b"{"), upto(b"[1")),
  ]
  ret = b"        return "
  assert extract_pairs("header_colon", SNIPPET) == [
    (upto(b"if scale == 2"), swap(upto(b"if scale == 2"), b"if ", b"return ")),
    (swap(upto(b"[[self.size]]"), b"return ", b"if "), upto(b"[[self.size]]")),
    (swap(upto(b"f(scale)"), ret, b"        if "), upto(b"f(scale)")),
    # This cut is 2 bytes later than the last one: its window starts a line later.
    (
      swap(box + b'"', ret, b"        if ")[len(upto(b"Box:\n")) :],
      (box + b'"')[len(upto(b"Box:\n")) :],
    ),
  ]
  assert extract_pairs("eq_vs_assign", SNIPPET) == [
    (swap(upto(b"size ="), b"size", b"if size"), upto(b"size =")),
    (upto(b"if scale ="), swap(upto(b"if scale ="), b"if ", b"")),
    (swap(upto(b"total ="), b"total", b"if total"), upto(b"total =")),
  ]
  assert extract_pairs("for_in", SNIPPET) == [
    (swap(upto(b"size "), b"size", b"for size"), upto(b"size ")),
    (upto(b"for k "), swap(upto(b"for k "), b"for ", b"")),
    (swap(upto(b"total "), b"total", b"for total"), upto(b"total ")),
  ]
  method = upto(b"def area(")
  make = upto(b"def make(")
  assert extract_pairs("self_in_method", SNIPPET) == [
    (method, swap(method, b"def area(", b"@classmethod\n    def area(")),
    (swap(make, b"@classmethod\n    ", b""), make),
  ]
  assert extract_pairs("variable_type", SNIPPET) == []  # templated
  assert extract_pairs("closing_quote", b"def broken(:\n") == []


def test_windows_start_at_a_logical_line_and_fit_max_len():
  # max_len 40: 39 bytes of code after the separator; the 'h' cut is at byte 45, so the
  # window starts at the first logical line at or after byte 6: "class Box:".
  pairs = extract_pairs("closing_quote", SNIPPET, max_len=40)
  assert pairs[:2] == [
    (upto(b"{'w"), upto(b"{'w")[:-2] + b'"w'),
    (b"class Box:\n    size = {'w': 1, 'h", b"class Box:\n    size = {'w': 1, \"h"),
  ]
  assert pairs[2:] == [
    (b"    def make(cls):\n        return 'box", b'    def make(cls):\n        return "box'),
  ]
  # A string inside a bracket continuation: the window starts where its statement starts.
  source = b"x = 1\nfoo(1,\n    'a')\n"
  assert extract_pairs("closing_quote", source, max_len=40) == [
    (b"x = 1\nfoo(1,\n    'a", b'x = 1\nfoo(1,\n    "a'),
  ]
  assert extract_pairs("closing_quote", source, max_len=16) == [
    (b"foo(1,\n    'a", b'foo(1,\n    "a'),
  ]


def test_nonsense_controls_permute_the_labels_of_the_same_prompts(suite):
  for name in TASK_NAMES:
    real, control = suite[name], suite[name + NONSENSE_SUFFIX]
    assert (control.tok, control.alt, len(control)) == (real.tok, real.alt, len(real))

    def labelled(task):
      return collections.Counter(
        (e.prompt_ids.tobytes(), e.answer) for p in task.pairs for e in (p.a, p.b)
      )

    real_labels, control_labels = labelled(real), labelled(control)
    prompts = collections.Counter(k for k, _ in real_labels.elements())
    assert collections.Counter(k for k, _ in control_labels.elements()) == prompts
    assert control_labels != real_labels
    for pair in control.pairs:
      assert pair.a.answer == real.tok and pair.b.answer == real.alt
      assert pair.origin == "shuffled"
    # A fixed-seed permutation: the same again for the same seed.
    assert labelled(nonsense(real, seed=0)) == control_labels
  moved = [labelled_by_seed(suite["closing_quote"], s) for s in (0, 1)]
  assert moved[0] != moved[1]


def labelled_by_seed(task, seed):
  return [
    (e.prompt_ids.tobytes(), e.answer) for p in nonsense(task, seed).pairs for e in (p.a, p.b)
  ]


def test_build_task_matches_the_suite_and_is_deterministic(docs, suite):
  for name in ("closing_quote", "variable_type", "closing_quote_nonsense"):
    alone = build_task(name, docs, ByteTokenizer(), N_PAIRS, MAX_LEN, seed=0)
    assert [(p.a.prompt_ids.tobytes(), p.b.prompt_ids.tobytes()) for p in alone.pairs] == [
      (p.a.prompt_ids.tobytes(), p.b.prompt_ids.tobytes()) for p in suite[name].pairs
    ]
  other = build_task("closing_quote", docs, None, N_PAIRS, MAX_LEN, seed=1)
  assert {p.a.prompt_ids.tobytes() for p in other.pairs} != {
    p.a.prompt_ids.tobytes() for p in suite["closing_quote"].pairs
  }


class QuoteSplittingTokenizer(ByteTokenizer):
  """Bytes, except that a double quote is two tokens."""

  def encode(self, text):
    ids = super().encode(text)
    return np.concatenate([[i, i] if i == ord('"') else [i] for i in ids] or [[]]).astype(np.int32)

  def spec(self):
    return "quote-splitting"


def test_candidates_must_be_single_tokens(docs):
  tokenizer = QuoteSplittingTokenizer()
  with pytest.raises(JaxsaeError, match=r"closing_quote.*quote-splitting"):
    build_task("closing_quote", docs[:3], tokenizer, n_pairs=4, max_len=MAX_LEN)
  with pytest.raises(JaxsaeError, match="closing_quote"):
    build_suite(docs[:3], tokenizer, n_pairs=4, max_len=MAX_LEN)
  # Tasks whose candidates are single tokens still build.
  ok = build_suite(docs, tokenizer, n_pairs=4, max_len=MAX_LEN, names=["for_in"], controls=False)
  assert list(ok) == ["for_in"] and ok["for_in"].tokenizer_spec == "quote-splitting"


def test_user_errors_name_the_problem_and_the_fix(docs):
  with pytest.raises(JaxsaeError, match="unknown circuit task"):
    build_task("closing_quotes", docs, n_pairs=4)
  with pytest.raises(JaxsaeError, match=r"found only \d+ of the 100000.*more documents"):
    build_task("self_in_method", docs[:2], n_pairs=100_000)
  with pytest.raises(JaxsaeError, match="max_len must be at least"):
    build_task("for_in", docs, n_pairs=4, max_len=8)
  with pytest.raises(JaxsaeError, match="n_pairs"):
    build_task("for_in", docs, n_pairs=0)
  # Templated prompts need no corpus; identifiers fall back to a built-in list.
  assert len(build_task("variable_type", [], n_pairs=8, max_len=MAX_LEN)) == 8
