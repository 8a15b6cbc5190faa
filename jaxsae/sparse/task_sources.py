"""Where circuit-task prompts come from: Python files read with `tokenize` and `ast` on exact
byte offsets (`Source`), the per-task site extractors that find each clean prompt and its
minimal-edit partner (`Site`), and the template of the one templated task (variable_type).
The task table and pairing are `jaxsae.sparse.task_suite`; batching and the loss
`jaxsae.sparse.tasks`.
"""

from __future__ import annotations

import ast
import builtins
import codecs
import dataclasses
import io
import keyword
import re
import tokenize
import warnings
from collections.abc import Iterable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Site:
  """A cut in a file: the prompt is source[..cut), whose next byte is the real answer.

  edits: (start, end, replacement) byte edits inside [anchor, cut) that turn the prompt into
  its contrast partner; anchor: the first byte the prompt must contain.
  """

  cut: int
  anchor: int
  edits: tuple[tuple[int, int, bytes], ...]
  real_is_tok: bool


_LONE_CR = re.compile(rb"\r(?!\n)")
_FSTRING_START = {
  getattr(tokenize, n) for n in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, n)
}
_FSTRING_END = {
  getattr(tokenize, n) for n in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, n)
}
_SKIP = {tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}
_OPEN = {"(": ")", "[": "]", "{": "}"}


class Source:
  """One parsed file: its bytes, tokens with byte spans, ast nodes, and logical line starts."""

  def __init__(self, data: bytes):
    if data.startswith(codecs.BOM_UTF8):
      data = data[len(codecs.BOM_UTF8) :]
    # A lone CR ends a line for the parser but not for tokenize; "\n" keeps every offset.
    self.data = _LONE_CR.sub(b"\n", data)
    text = self.data.decode("utf-8")
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # invalid escape sequences in the source
      tree = ast.parse(text)
    self.tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    if any(t.type == tokenize.ERRORTOKEN for t in self.tokens):
      raise SyntaxError("error token")
    arr = np.frombuffer(self.data, np.uint8)
    char_byte = np.append(np.flatnonzero((arr & 0xC0) != 0x80), len(arr))
    self.line_byte = np.concatenate([[0], np.flatnonzero(arr == ord("\n")) + 1, [len(arr)]])
    line_char = np.searchsorted(char_byte, self.line_byte)

    def to_byte(row: int, col: int) -> int:
      row = min(max(row - 1, 0), len(line_char) - 1)
      return int(char_byte[min(line_char[row] + col, len(char_byte) - 1)])

    self.start = [to_byte(*t.start) for t in self.tokens]
    self.end = [to_byte(*t.end) for t in self.tokens]
    # Tokens outside f-strings (3.12+ splits them into tokens), bracket pairs, and the bracket
    # depth before each code token; logical line starts (where a prompt may begin).
    self.code = [False] * len(self.tokens)
    self.depth = [0] * len(self.tokens)
    self.pairs: list[tuple[int, int]] = []
    starts, stack, fstring, new_line = {0}, [], 0, True
    for i, t in enumerate(self.tokens):
      if t.type in _FSTRING_START:
        fstring += 1
      elif t.type in _FSTRING_END:
        fstring -= 1
      elif fstring == 0:
        self.code[i] = True
      if t.type == tokenize.NEWLINE:
        new_line = True
      elif t.type not in _SKIP and t.type != tokenize.NL:
        if new_line:
          starts.add(self.row_start(t.start[0]))
        new_line = new_line and t.type == tokenize.COMMENT
      if not self.code[i]:
        continue
      self.depth[i] = len(stack)
      if t.type == tokenize.OP and t.string in _OPEN:
        stack.append(i)
      elif t.type == tokenize.OP and t.string in _OPEN.values():
        if not stack or _OPEN[self.tokens[stack[-1]].string] != t.string:
          raise SyntaxError("unbalanced brackets")
        self.pairs.append((stack.pop(), i))
    self.line_starts = np.array(sorted(starts), np.int64)
    self.index_at = {  # byte start -> index of the code token (not a zero-width one) there
      s: i
      for i, s in enumerate(self.start)
      if self.code[i] and self.tokens[i].type not in _SKIP | {tokenize.NL, tokenize.NEWLINE}
    }
    self.nodes = []
    todo = [tree]
    while todo:  # every ast node, f-string contents excluded (their positions are unreliable)
      node = todo.pop()
      if isinstance(node, ast.JoinedStr):
        continue
      self.nodes.append(node)
      todo.extend(ast.iter_child_nodes(node))
    self.nodes.sort(key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))

  @classmethod
  def parse(cls, data: bytes) -> Source | None:
    """The parsed file, or None when it is not UTF-8 Python that tokenize and ast accept."""
    try:
      return cls(bytes(data))
    except (SyntaxError, ValueError, tokenize.TokenError, RecursionError, MemoryError):
      return None

  def row_start(self, row: int) -> int:
    return int(self.line_byte[min(max(row - 1, 0), len(self.line_byte) - 1)])

  def span(self, node) -> tuple[int, int]:
    """Byte span of an ast node (ast columns are UTF-8 byte offsets)."""
    return (
      self.row_start(node.lineno) + node.col_offset,
      self.row_start(node.end_lineno) + node.end_col_offset,
    )

  def of_type(self, *kinds) -> Iterable:
    return (n for n in self.nodes if isinstance(n, kinds))

  def at(self, lo: int, hi: int) -> bytes:
    return self.data[lo:hi]

  def prompts(self, site: Site, max_len: int) -> tuple[bytes, bytes] | None:
    """(tok prompt, alt prompt) without the separator: the longest window of whole logical
    lines ending at the cut that holds the anchor and fits max_len - 1 bytes (so at most
    max_len tokens for any tokenizer whose tokens are at least one byte)."""
    growth = sum(len(r) - (e - s) for s, e, r in site.edits)
    budget = max_len - 1 - max(growth, 0)
    k = int(np.searchsorted(self.line_starts, site.cut - budget))
    if k == len(self.line_starts) or self.line_starts[k] > site.anchor:
      return None
    lo = int(self.line_starts[k])
    real = self.data[lo : site.cut]
    edited, at = [], lo
    for s, e, r in sorted(site.edits):
      edited += [self.data[at:s], r]
      at = e
    edited = b"".join([*edited, self.data[at : site.cut]])
    if not real or not edited or real == edited:
      return None
    return (real, edited) if site.real_is_tok else (edited, real)


# --------------------------------------------------------------------------------------------
# Site extractors: each finds the clean sites of one task in one file.


def _indent_before(src: Source, at: int) -> bytes | None:
  """The whitespace from the start of `at`'s line up to `at`, or None if code precedes it."""
  line = src.data.rfind(b"\n", 0, at) + 1
  head = src.data[line:at]
  return head if head.strip(b" \t") == b"" else None


def closing_quote(src: Source) -> list[Site]:
  """Single-line, non-f, non-triple string literals with no quote or backslash inside: cut
  before the closing quote; the partner swaps the opening quote."""
  sites = []
  for i, t in enumerate(src.tokens):
    if t.type != tokenize.STRING or not src.code[i]:
      continue
    prefix = re.match(r"[A-Za-z]*", t.string)[0]
    body = t.string[len(prefix) :]
    if "f" in prefix.lower() or body[:3] in ("'''", '"""') or len(body) < 3:
      continue
    quote, content = body[0], body[1:-1]
    if any(c in content for c in "'\"\\\n\r"):
      continue
    opening, cut = src.start[i] + len(prefix), src.end[i] - 1
    other = b'"' if quote == "'" else b"'"
    if src.at(opening, opening + 1) != quote.encode() or src.at(cut, cut + 1) != quote.encode():
      continue
    sites.append(Site(cut, opening, ((opening, opening + 1, other),), quote == "'"))
  return sites


def bracket_depth(src: Source) -> list[Site]:
  """Non-empty list displays outside any bracket whose "]" ends a line (they may span lines).
  Nested (last element a list, so the display ends "]]"): cut after the inner "]" (next "]"),
  partner drops the outer "[". Flat: cut after the "]" (next "\\n"), partner adds a second "["
  in front."""
  sites = []
  for node in src.of_type(ast.List):
    if not node.elts or not isinstance(node.ctx, ast.Load):
      continue
    s, e = src.span(node)
    i = src.index_at.get(s)
    if i is None or src.depth[i] != 0 or src.at(s, s + 1) != b"[" or src.at(e - 1, e + 1) != b"]\n":
      continue
    inner = node.elts[-1]
    if isinstance(inner, ast.List) and src.span(inner)[1] == e - 1:
      sites.append(Site(e - 1, s, ((s, s + 1, b""),), True))
    elif not isinstance(inner, ast.List):
      sites.append(Site(e, s, ((s, s, b"["),), False))
  return sites


_NO_SWAP_OPS = {"=", ":", ":=", "**"}


def closing_bracket_type(src: Source) -> list[Site]:
  """Non-empty ( ) and [ ] pairs on one line: cut before the closer; the partner swaps the
  opener. Skipped when the swap cannot parse either way: keyword arguments, slices, walrus,
  ** unpacking, lambda/yield inside, and def/class parameter lists."""
  sites = []
  for i, j in src.pairs:
    opener, closer = src.tokens[i], src.tokens[j]
    if opener.string not in "([" or j == i + 1 or opener.start[0] != closer.start[0]:
      continue
    inside = [k for k in range(i + 1, j) if src.code[k] and src.depth[k] == src.depth[i] + 1]
    if any(
      src.tokens[k].string in _NO_SWAP_OPS and src.tokens[k].type == tokenize.OP for k in inside
    ) or any(src.tokens[k].string in ("lambda", "yield") for k in range(i + 1, j)):
      continue
    if i >= 2 and src.tokens[i - 2].string in ("def", "class"):
      continue
    s, cut = src.start[i], src.start[j]
    swap = b"[" if opener.string == "(" else b"("
    sites.append(Site(cut, s, ((s, s + 1, swap),), closer.string == ")"))
  return sites


def dict_vs_list(src: Source) -> list[Site]:
  """A dict display cut after its first key (next ":"), partner with "{" -> "[" (a list
  element is never followed by ":"); a list display of two or more elements whose first is a
  str or number literal, cut after it (next ","), partner with "[" -> "{" (a set display could
  also go on with ",", but after a literal a dict is the usual reading of "{")."""
  sites = []
  for node in src.of_type(ast.Dict, ast.List):
    if isinstance(node, ast.Dict):
      if not node.keys or node.keys[0] is None:
        continue
      first, opener, swap, nxt, is_tok = node.keys[0], b"{", b"[", b":", True
    else:
      if len(node.elts) < 2 or not isinstance(node.ctx, ast.Load):
        continue
      first, opener, swap, nxt, is_tok = node.elts[0], b"[", b"{", b",", False
      if not isinstance(first, ast.Constant) or type(first.value) not in (str, int, float):
        continue
    s, _ = src.span(node)
    _, cut = src.span(first)
    if src.at(s, s + 1) != opener or src.at(cut, cut + 1) != nxt:
      continue
    sites.append(Site(cut, s, ((s, s + 1, swap),), is_tok))
  return sites


_HEADER = re.compile(rb"(if|elif|while) ")


def header_colon(src: Source) -> list[Site]:
  """if/elif/while headers with a one-line test followed by ":": cut before the colon, partner
  with the keyword replaced by "return" (next "\\n"); and one-line "return <expr>" statements
  (not a bare tuple or lambda) that end their line: cut at the newline, partner "if <expr>"."""
  sites = []
  for node in src.of_type(ast.If, ast.While, ast.Return):
    value = node.value if isinstance(node, ast.Return) else node.test
    if value is None or value.lineno != node.lineno or value.end_lineno != node.lineno:
      continue
    s, _ = src.span(node)
    vs, ve = src.span(value)
    keyword_ = src.at(s, vs)
    if isinstance(node, ast.Return):
      if keyword_ != b"return " or isinstance(value, ast.Tuple | ast.Lambda | ast.Starred):
        continue
      if src.at(ve, ve + 1) == b"\n" and _indent_before(src, s) is not None:
        sites.append(Site(ve, s, ((s, vs, b"if "),), False))
    elif _HEADER.fullmatch(keyword_) and src.at(ve, ve + 1) == b":":
      sites.append(Site(ve, s, ((s, vs, b"return "),), True))
  return sites


def eq_vs_assign(src: Source) -> list[Site]:
  """`if/elif/while X == ...` headers (X a name or attribute): cut after "X =" (next "="),
  partner without the keyword; and statements `X = ...` alone on their line: cut after "X ="
  (next " "), partner with "if " in front."""
  sites = []
  for node in src.of_type(ast.If, ast.While, ast.Assign):
    if isinstance(node, ast.Assign):
      if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name | ast.Attribute):
        continue
      target = node.targets[0]
      s, _ = src.span(node)
      ts, te = src.span(target)
      if ts == s and src.at(te, te + 3) == b" = " and _indent_before(src, s) is not None:
        sites.append(Site(te + 2, s, ((s, s, b"if "),), False))
      continue
    test = node.test
    if not (
      isinstance(test, ast.Compare)
      and isinstance(test.ops[0], ast.Eq)
      and isinstance(test.left, ast.Name | ast.Attribute)
      and test.lineno == node.lineno
    ):
      continue
    s, _ = src.span(node)
    ls, le = src.span(test.left)
    if _HEADER.fullmatch(src.at(s, ls)) and src.at(le, le + 4) == b" == ":
      sites.append(Site(le + 2, s, ((s, ls, b""),), True))
  return sites


def for_in(src: Source) -> list[Site]:
  """`for X in` loops (X a name): cut after "for X " (next "i"), partner without "for "; and
  statements `X = ...` alone on their line: cut after "X " (next "="), partner "for X "."""
  sites = []
  for node in src.of_type(ast.For, ast.Assign):
    if isinstance(node, ast.For):
      if not isinstance(node.target, ast.Name):
        continue
      s, _ = src.span(node)
      ts, te = src.span(node.target)
      if src.at(s, ts) == b"for " and src.at(te, te + 4) == b" in ":
        sites.append(Site(te + 1, s, ((s, ts, b""),), True))
      continue
    if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
      continue
    s, _ = src.span(node)
    ts, te = src.span(node.targets[0])
    if ts == s and src.at(te, te + 3) == b" = " and _indent_before(src, s) is not None:
      sites.append(Site(te + 1, s, ((s, s, b"for "),), False))
  return sites


def self_in_method(src: Source) -> list[Site]:
  """Methods directly in a class body. Undecorated ones whose first parameter is self: cut
  after "def name(" (next "s"), partner with an "@classmethod" line added above; methods whose
  only decorator is "@classmethod" on the line above and whose first parameter is cls: cut
  after "def name(" (next "c"), partner with the decorator line removed."""
  sites = []
  for cls in src.of_type(ast.ClassDef):
    for node in cls.body:
      if not isinstance(node, ast.FunctionDef):
        continue
      params = node.args.posonlyargs + node.args.args
      if not params:
        continue
      s = src.row_start(node.lineno) + node.col_offset
      head = b"def " + node.name.encode() + b"("
      indent = _indent_before(src, s)
      if src.at(s, s + len(head)) != head or indent is None:
        continue
      cut = s + len(head)
      if params[0].arg == "self" and not node.decorator_list:
        sites.append(Site(cut, s, ((s, s, b"@classmethod\n" + indent),), True))
      elif params[0].arg == "cls" and len(node.decorator_list) == 1:
        dec = node.decorator_list[0]
        at = src.row_start(dec.lineno) + dec.col_offset - 1
        if (
          isinstance(dec, ast.Name)
          and dec.id == "classmethod"
          and dec.lineno == node.lineno - 1
          and src.at(at, s) == b"@classmethod\n" + indent
          and _indent_before(src, at) == indent
        ):
          sites.append(Site(cut, at, ((at, s, b""),), False))
  return sites


# --------------------------------------------------------------------------------------------
# Templated prompts.

_KEYWORDS = frozenset(keyword.kwlist) | frozenset(getattr(keyword, "softkwlist", ()))
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{1,11}")
_AVOID = _KEYWORDS | frozenset(dir(builtins)) | {"self", "cls"}
# Used only when the documents hold too few identifiers (tiny test corpora).
FALLBACK_NAMES = (
  "items", "result", "names", "value", "seen", "text", "parts", "line", "key", "data", "chars",
  "words", "out", "buf", "entry", "path", "node", "tokens", "word", "item", "prefix", "suffix",
)  # fmt: skip
MIN_NAMES = 16


def identifiers(src: Source) -> set[str]:
  return {
    t.string
    for i, t in enumerate(src.tokens)
    if t.type == tokenize.NAME
    and src.code[i]
    and _IDENTIFIER.fullmatch(t.string)
    and t.string not in _AVOID
  }


def variable_type_pair(rng: np.random.Generator, names: list[str]) -> tuple[bytes, bytes]:
  """(set prompt, str prompt): a function that accumulates into a variable initialised with
  set() (the loop body goes on with ".add(...)") or with an empty string (" += ...")."""
  func, arg, var, item, other = (names[i] for i in rng.choice(len(names), 5, replace=False))
  filler = [
    "",
    f"    {other} = len({arg})\n",
    f"    if not {arg}:\n        return {var}\n",
  ][rng.integers(3)]
  iterable = [arg, f"sorted({arg})", f"reversed({arg})"][rng.integers(3)]
  body = f"        if {item}:\n            " if rng.random() < 0.5 else "        "
  empty = ["''", '""'][rng.integers(2)]

  def build(init: str) -> bytes:
    lines = f"def {func}({arg}):\n    {var} = {init}\n{filler}    for {item} in {iterable}:\n"
    return (lines + body + var).encode()

  return build("set()"), build(empty)
