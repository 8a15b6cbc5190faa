"""Binary token-labelling tasks on Python source, for the TopK paper's probe loss.

Gao et al. (2024), "probe loss": for each binary task fit a 1-D logistic probe
p(y=1) = σ(a·z_m + b) on every latent m, keep the best cross-entropy, and average over tasks
(`jaxsae.evals.probes`). This module makes the tasks: each is a boolean per byte of a Python
source file, derived exactly from the standard library's `tokenize` and `ast` output (plus bracket
and indentation bookkeeping on tokenize tokens). A token takes the label of its first byte.

Positions: tokenize gives (row, column) with the column in characters of the decoded line, ast
gives UTF-8 byte columns; both become byte offsets into the source. f-string contents count as
string and never as names, operators or brackets (as in Python 3.11, where an f-string is one
STRING token), and ast nodes inside f-strings are not visited.
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
import types
import warnings

import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.text.tokenizer import ByteTokenizer, Tokenizer

TASK_DESCRIPTIONS: dict[str, str] = {
  "in_string": "inside a string literal token, quotes and prefix included",
  "in_fstring": "inside an f-string literal",
  "in_triple_quoted_string": "inside a triple-quoted string literal",
  "in_docstring": "the string statement opening a module, def or class body (ast)",
  "in_comment": "a comment, from # to the end of the line",
  "keyword": "a NAME token in keyword.kwlist",
  "builtin_name": "a NAME token naming a builtin function, type or exception",
  "name": "a NAME token that is not a keyword (an identifier)",
  "self_name": "the NAME token self",
  "attribute_name": "the attribute NAME of an ast.Attribute (the name after a dot)",
  "number": "a NUMBER token",
  "operator": "an OP token (operators, brackets and delimiters)",
  "arithmetic_operator": "an OP token + - * / // % ** or @ (a decorator's @ excluded)",
  "comparison_operator": "an OP token == != < > <= >=",
  "assignment_operator": "an OP token = := or an augmented assignment (+= -= ...)",
  "bracket_depth_ge1": "inside at least one pair of brackets (the brackets themselves not)",
  "bracket_depth_ge2": "inside at least two nested pairs of brackets",
  "inside_parens": "the innermost enclosing bracket pair is ( )",
  "inside_square": "the innermost enclosing bracket pair is [ ]",
  "inside_curly": "the innermost enclosing bracket pair is { }",
  "indent_depth_ge1": "on a logical line indented at least one level (INDENT/DEDENT tokens)",
  "indent_depth_ge2": "on a logical line indented at least two levels",
  "line_start_whitespace": "the indentation before the first token of a logical line",
  "in_def_signature": "a def header, from def (or async) to its colon (ast + tokens)",
  "in_function_body": "a def body, after the header's colon to the end of the def (ast)",
  "in_class_header": "a class header, from class to its colon (ast + tokens)",
  "in_call_args": "between the parentheses of an ast.Call",
  "in_subscript": "between the square brackets of an ast.Subscript",
  "in_import_statement": "an import or from-import statement (ast)",
  "in_decorator": "a decorator line, from @ to the end of its expression",
  "in_return_statement": "a return statement (ast)",
  "in_lambda": "a lambda expression (ast)",
  "in_comprehension": "a list, set or dict comprehension or a generator expression (ast)",
  "in_type_annotation": "an argument, return or variable annotation (ast)",
}
TASKS: tuple[str, ...] = tuple(TASK_DESCRIPTIONS)

_KEYWORDS = frozenset(keyword.kwlist)
# Builtin functions, types and exceptions: a fixed set, whatever a notebook or site adds to
# `builtins` (help, exit, IPython's display are not builtin functions).
_BUILTINS = (
  frozenset(
    name
    for name, value in vars(builtins).items()
    if not name.startswith("_") and isinstance(value, type | types.BuiltinFunctionType)
  )
  - _KEYWORDS
)
_ARITHMETIC = frozenset({"+", "-", "*", "/", "//", "%", "**", "@"})
_COMPARISON = frozenset({"==", "!=", "<", ">", "<=", ">="})
_ASSIGNMENT = frozenset(
  {"=", ":=", "+=", "-=", "*=", "/=", "//=", "%=", "**=", "@=", "&=", "|=", "^=", ">>=", "<<="}
)
_OPEN = {"(": 0, "[": 1, "{": 2}
_CLOSE = {")": "(", "]": "[", "}": "{"}
# Python 3.12+ splits f-strings (and 3.14 t-strings) into START ... END tokens.
_FSTRING_START = {
  getattr(tokenize, n) for n in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, n)
}
_FSTRING_END = {
  getattr(tokenize, n) for n in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, n)
}
_SCOPES = frozenset({ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef})
_NOT_CODE = {tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.COMMENT, tokenize.ENCODING}
_STRING_PREFIX = re.compile(r"[A-Za-z]*")
_LONE_CR = re.compile(r"\r(?!\n)")


def label_source(source: bytes) -> dict[str, np.ndarray] | None:
  """{task: (len(source),) bool} for every task in TASKS, or None when the source is not UTF-8
  or does not tokenize or parse (as some deliberately broken test files do)."""
  source = bytes(source)
  start = len(codecs.BOM_UTF8) if source.startswith(codecs.BOM_UTF8) else 0
  try:
    # A lone CR ends a line for the parser but not for tokenize's readline; as "\n" it ends one
    # for both, and both are one byte, so offsets do not move.
    text = _LONE_CR.sub("\n", source[start:].decode("utf-8"))
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # invalid escape sequences in the source
      tree = ast.parse(text)
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
  except (SyntaxError, ValueError, tokenize.TokenError, RecursionError, MemoryError):
    return None
  if any(t.type == tokenize.ERRORTOKEN for t in tokens):
    return None
  try:
    return _Labeller(source, start, text, tree, tokens).labels()
  except _Unbalanced:
    return None


class _Labeller:
  """Byte offsets for tokenize and ast positions, and the labels painted from them."""

  def __init__(self, source: bytes, start: int, text: str, tree: ast.Module, tokens: list):
    self.n = len(source)
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    # Byte offset of each character (and of the end), and of each line start; rows past the end
    # (DEDENT and ENDMARKER) map to the end.
    self.char_byte = np.append(np.flatnonzero((data & 0xC0) != 0x80), len(data)) + start
    line_byte = np.concatenate([[0], np.flatnonzero(data == ord("\n")) + 1, [len(data)]])
    self.line_byte = line_byte + start
    self.line_char = np.searchsorted(self.char_byte, self.line_byte)
    self.tree, self.tokens = tree, tokens
    rows = np.array([t.start[0] for t in tokens] + [t.end[0] for t in tokens], np.int64)
    cols = np.array([t.start[1] for t in tokens] + [t.end[1] for t in tokens], np.int64)
    chars = self.line_char[np.clip(rows - 1, 0, len(self.line_char) - 1)] + cols
    offsets = self.char_byte[np.clip(chars, 0, len(self.char_byte) - 1)]
    self.tok_start, self.tok_end = offsets[: len(tokens)], offsets[len(tokens) :]
    self.out = {task: np.zeros(self.n, bool) for task in TASKS}

  def row_start(self, row: int) -> int:
    return int(self.line_byte[min(max(row - 1, 0), len(self.line_byte) - 1)])

  def node_span(self, node) -> tuple[int, int]:
    """Byte span of an ast node (ast columns are UTF-8 byte offsets)."""
    return (
      min(self.row_start(node.lineno) + node.col_offset, self.n),
      min(self.row_start(node.end_lineno) + node.end_col_offset, self.n),
    )

  def paint(self, task: str, spans) -> None:
    self.out[task] |= _coverage(self.n, spans) > 0

  def labels(self) -> dict[str, np.ndarray]:
    self.scan_tokens()
    self.walk_ast()
    return self.out

  def scan_tokens(self) -> None:
    tokens, starts, ends = self.tokens, self.tok_start, self.tok_end
    code = np.zeros(len(tokens), bool)  # a token outside f-strings, not an f-string boundary
    decorator_at = np.zeros(len(tokens), bool)  # the @ opening a decorator line
    strings, fstrings, triple = [], [], []
    fstring_depth, fstring_from, fstring_prefix = 0, 0, ""
    stack, brackets = [], []  # brackets: (open token index, close token index)
    self.top_colons = []  # byte starts of ':' tokens outside brackets
    self.pair_of_close = {}  # close-bracket byte start -> open-bracket byte end
    self.attribute_ends = {}  # NAME byte end -> its byte start
    indent = np.zeros(self.n + 1, np.int64)
    leading, decorators = [], []
    line_first, line_last, decorator_from = True, None, None
    for i, tok in enumerate(tokens):
      if tok.type in _FSTRING_START:
        if fstring_depth == 0:
          fstring_from, fstring_prefix = starts[i], tok.string
        fstring_depth += 1
      elif tok.type in _FSTRING_END:
        fstring_depth -= 1
        if fstring_depth == 0:
          _add_string(strings, fstrings, triple, (fstring_from, ends[i]), fstring_prefix)
      elif fstring_depth == 0:
        code[i] = True
      if tok.type == tokenize.INDENT:
        indent[self.row_start(tok.start[0])] += 1
      elif tok.type == tokenize.DEDENT:
        indent[self.row_start(tok.start[0])] -= 1
      elif tok.type == tokenize.NEWLINE:
        if decorator_from is not None:
          decorators.append((decorator_from, ends[line_last]))
        line_first, line_last, decorator_from = True, None, None
      elif tok.type not in _NOT_CODE and tok.type != tokenize.ENDMARKER:
        if line_first:
          leading.append((self.row_start(tok.start[0]), starts[i]))
          if tok.type == tokenize.OP and tok.string == "@":
            decorator_from, decorator_at[i] = starts[i], True
        line_first, line_last = False, i
      if not code[i]:
        continue
      if tok.type == tokenize.STRING:
        _add_string(strings, fstrings, triple, (starts[i], ends[i]), tok.string)
      elif tok.type == tokenize.OP and tok.string in _OPEN:
        stack.append(i)
      elif tok.type == tokenize.OP and tok.string in _CLOSE:
        if not stack or tokens[stack[-1]].string != _CLOSE[tok.string]:
          raise _Unbalanced
        j = stack.pop()
        brackets.append((j, i))
        self.pair_of_close[int(starts[i])] = int(ends[j])
      elif tok.type == tokenize.OP and tok.string == ":" and not stack:
        self.top_colons.append(int(starts[i]))
      elif tok.type == tokenize.NAME:
        self.attribute_ends[int(ends[i])] = int(starts[i])

    def spans_of(mask):
      return np.stack([starts[mask], ends[mask]], axis=1)

    kind = np.array([t.type for t in tokens], np.int64)
    text = np.array([t.string for t in tokens], dtype=object)
    name, op = code & (kind == tokenize.NAME), code & (kind == tokenize.OP)
    is_keyword = name & np.array([s in _KEYWORDS for s in text], bool)
    self.paint("in_string", strings)
    self.paint("in_fstring", fstrings)
    self.paint("in_triple_quoted_string", triple)
    self.paint("in_comment", spans_of(code & (kind == tokenize.COMMENT)))
    self.paint("keyword", spans_of(is_keyword))
    self.paint("builtin_name", spans_of(name & np.array([s in _BUILTINS for s in text], bool)))
    self.paint("name", spans_of(name & ~is_keyword))
    self.paint("self_name", spans_of(name & (text == "self")))
    self.paint("number", spans_of(code & (kind == tokenize.NUMBER)))
    self.paint("operator", spans_of(op))
    for task, ops in [
      ("arithmetic_operator", _ARITHMETIC - {"@"}),
      ("comparison_operator", _COMPARISON),
      ("assignment_operator", _ASSIGNMENT),
    ]:
      self.paint(task, spans_of(op & np.array([s in ops for s in text], bool)))
    self.paint("arithmetic_operator", spans_of(op & ~decorator_at & (text == "@")))
    inside = [(ends[j], starts[i]) for j, i in brackets]
    depth = _coverage(self.n, inside)
    self.out["bracket_depth_ge1"] = depth >= 1
    self.out["bracket_depth_ge2"] = depth >= 2
    innermost = np.full(self.n, -1, np.int8)
    for j, i in sorted(brackets):  # outer pairs open first; inner ones paint over them
      innermost[ends[j] : starts[i]] = _OPEN[tokens[j].string]
    for task, code_ in [("inside_parens", 0), ("inside_square", 1), ("inside_curly", 2)]:
      self.out[task] = innermost == code_
    level = np.cumsum(indent)[: self.n]
    self.out["indent_depth_ge1"] = level >= 1
    self.out["indent_depth_ge2"] = level >= 2
    self.paint("line_start_whitespace", leading)
    self.paint("in_decorator", decorators)
    self.top_colons = np.array(self.top_colons, np.int64)

  def header_end(self, search_from: int) -> int:
    """Byte end of the first ':' outside brackets at or after `search_from`."""
    k = int(np.searchsorted(self.top_colons, search_from))
    return int(self.top_colons[k]) + 1 if k < len(self.top_colons) else search_from

  def inside_brackets(self, node) -> tuple[int, int] | None:
    """Bytes between a Call's or Subscript's brackets: its span ends with the closing one."""
    _, end = self.node_span(node)
    open_end = self.pair_of_close.get(end - 1)
    return None if open_end is None else (open_end, end - 1)

  def walk_ast(self) -> None:
    spans = {task: [] for task in TASKS}
    simple = {  # node kinds whose whole span is the label
      ast.Import: "in_import_statement",
      ast.ImportFrom: "in_import_statement",
      ast.Return: "in_return_statement",
      ast.Lambda: "in_lambda",
      ast.ListComp: "in_comprehension",
      ast.SetComp: "in_comprehension",
      ast.DictComp: "in_comprehension",
      ast.GeneratorExp: "in_comprehension",
    }
    stack = [self.tree]
    while stack:
      node = stack.pop()
      kind = type(node)
      if kind is ast.JoinedStr:
        continue  # positions inside f-strings are unreliable before Python 3.12
      stack.extend(ast.iter_child_nodes(node))
      if kind in simple:
        spans[simple[kind]].append(self.node_span(node))
      elif kind is ast.Attribute:
        end = self.node_span(node)[1]
        if end in self.attribute_ends:
          spans["attribute_name"].append((self.attribute_ends[end], end))
      elif kind is ast.Call or kind is ast.Subscript:
        inside = self.inside_brackets(node)
        if inside is not None:
          spans["in_call_args" if kind is ast.Call else "in_subscript"].append(inside)
      elif (kind is ast.arg or kind is ast.AnnAssign) and node.annotation is not None:
        spans["in_type_annotation"].append(self.node_span(node.annotation))
      elif kind in _SCOPES:
        first = node.body[0] if node.body else None
        if (
          type(first) is ast.Expr
          and type(first.value) is ast.Constant
          and isinstance(first.value.value, str)
        ):
          spans["in_docstring"].append(self.node_span(first))
        if kind is ast.ClassDef:
          start, _ = self.node_span(node)
          spans["in_class_header"].append((start, self.header_end(start)))
        elif kind is not ast.Module:
          start, end = self.node_span(node)
          after = self.node_span(node.returns)[1] if node.returns is not None else start
          colon = self.header_end(after)
          spans["in_def_signature"].append((start, colon))
          spans["in_function_body"].append((colon, end))
          if node.returns is not None:
            spans["in_type_annotation"].append(self.node_span(node.returns))
    for task, task_spans in spans.items():
      if task_spans:
        self.paint(task, task_spans)


def _add_string(strings, fstrings, triple, span, token_text: str) -> None:
  """Record a string literal's byte span by kind; `token_text` starts with its prefix."""
  prefix = _STRING_PREFIX.match(token_text)[0]
  strings.append(span)
  if "f" in prefix.lower():
    fstrings.append(span)
  if token_text[len(prefix) :].startswith(('"""', "'''")):
    triple.append(span)


class _Unbalanced(Exception):
  """Brackets that tokenize and ast disagree on; the file is skipped."""


def _coverage(n: int, spans) -> np.ndarray:
  """(n,) int: how many of the half-open byte spans [start, end) cover each byte."""
  spans = np.asarray(spans if isinstance(spans, np.ndarray) else list(spans), np.int64)
  spans = spans.reshape(-1, 2)
  spans = np.clip(spans[spans[:, 1] > spans[:, 0]], 0, n)
  diff = np.bincount(spans[:, 0], minlength=n + 1) - np.bincount(spans[:, 1], minlength=n + 1)
  return np.cumsum(diff[:n])


@dataclasses.dataclass(frozen=True)
class LabelledWindows:
  """Token windows with a label per token and task.

  windows: (W, seq_len) int32 token ids; each document's first window starts with the
    separator, its later windows continue it, and the last is padded with separators.
  labels: (W, seq_len, len(tasks)) bool, the label of each token's first byte.
  valid: (W, seq_len) bool, False on separators, padding and zero-byte tokens.
  doc_index: (W,) int32, the document each window comes from.
  """

  windows: np.ndarray
  labels: np.ndarray
  valid: np.ndarray
  tasks: tuple[str, ...]
  doc_index: np.ndarray

  def __len__(self) -> int:
    return len(self.windows)


def labelled_documents(
  docs: list[bytes],
  tokenizer: Tokenizer | None,
  seq_len: int,
  max_windows: int,
  seed: int = 0,
) -> LabelledWindows:
  """Up to `max_windows` windows drawn at random (by `seed`) from all windows of the documents
  that `label_source` can label; the tokenizer defaults to bytes. Only the documents of drawn
  windows are labelled, so a large corpus costs little more than its tokenization."""
  if seq_len < 2:
    raise JaxsaeError(f"seq_len must be at least 2 (separator + one token), got {seq_len}")
  if max_windows < 1:
    raise JaxsaeError(f"max_windows must be a positive number of windows, got {max_windows}")
  tokenizer = ByteTokenizer() if tokenizer is None else tokenizer
  docs = [bytes(d) for d in docs]
  ids = tokenizer.encode_many(docs)
  byte_lengths = np.asarray(tokenizer.token_byte_lengths())
  # Window w covers tokens [c·seq_len, (c+1)·seq_len) of separator + document.
  per_doc = np.array([(len(i) + seq_len) // seq_len for i in ids], np.int64)
  window_doc = np.repeat(np.arange(len(docs)), per_doc)
  window_chunk = np.arange(len(window_doc)) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
  token_labels: dict[int, np.ndarray | None] = {}
  chosen = []
  for w in np.random.default_rng(seed).permutation(len(window_doc)):
    d = int(window_doc[w])
    if d not in token_labels:
      token_labels[d] = _token_labels(docs[d], ids[d], byte_lengths, tokenizer)
    if token_labels[d] is not None:
      chosen.append(w)
      if len(chosen) == max_windows:
        break
  if not chosen:
    raise JaxsaeError(
      f"none of the {len(docs)} documents could be labelled: probe tasks need non-empty UTF-8 "
      "Python source that `tokenize` and `ast` accept; pass .py files (see text.corpus)"
    )
  chosen.sort()
  sep = tokenizer.separator_id
  windows = np.full((len(chosen), seq_len), sep, np.int32)
  labels = np.zeros((len(chosen), seq_len, len(TASKS)), bool)
  valid = np.zeros((len(chosen), seq_len), bool)
  for row, w in enumerate(chosen):
    d, lo = int(window_doc[w]), int(window_chunk[w]) * seq_len
    seq_ids = np.concatenate([[sep], ids[d]])[lo : lo + seq_len]
    seq_labels = token_labels[d][max(lo - 1, 0) : lo + seq_len - 1]
    at = 1 if lo == 0 else 0  # the separator opens a document's first window
    windows[row, : len(seq_ids)] = seq_ids
    labels[row, at : at + len(seq_labels)] = seq_labels
    valid[row, at : at + len(seq_labels)] = byte_lengths[seq_ids[at:]] > 0
  labels &= valid[..., None]
  return LabelledWindows(windows, labels, valid, TASKS, window_doc[chosen].astype(np.int32))


def _token_labels(doc: bytes, ids: np.ndarray, byte_lengths: np.ndarray, tokenizer):
  """(len(ids), T) bool: each task's label at each token's first byte; None if unlabelled."""
  byte_labels = label_source(doc) if len(ids) else None
  if byte_labels is None:
    return None
  lengths = byte_lengths[ids]
  if int(lengths.sum()) != len(doc):
    raise JaxsaeError(
      f"tokenizer {tokenizer.spec()} gives tokens of {int(lengths.sum())} bytes for a "
      f"{len(doc)}-byte document, so labels cannot be aligned to tokens; use a byte-level "
      "tokenizer (bytes, or a byte-level BPE)"
    )
  first_byte = np.minimum(np.cumsum(lengths) - lengths, len(doc) - 1)
  table = np.stack([byte_labels[task] for task in TASKS], axis=1)
  return table[first_byte] & (lengths > 0)[:, None]
