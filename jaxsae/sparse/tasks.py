"""The circuit task suite: binary next-token tasks on Python code, for weight-sparse transformers.

Gao et al. (2025), "Weight-sparse transformers have interpretable circuits": a task is a set of
prompts whose next token is one of two candidate tokens (tok, alt), grouped in contrast pairs
(A, B) with A's answer tok and B's answer alt. The task loss of a model is the two-token binary
cross-entropy at each prompt's last position, summed over the pair and averaged over pairs:

    L = mean over pairs of  −[log p₂(tok | A) + log p₂(alt | B)],
    p₂(c | x) = exp ℓ_c(x) / (exp ℓ_tok(x) + exp ℓ_alt(x)),

with ℓ the model's logits at the last prompt token. Chance is 2·ln 2 ≈ 1.386 per pair. In terms
of the margin m = ℓ_answer − ℓ_other of each example, −log p₂(answer) = softplus(−m), so
L = mean(softplus(−m_A) + softplus(−m_B)); accuracy is the fraction of the 2N examples with
m > 0. Pruning searches for the smallest circuit that keeps L low, so L is written in jnp and is
differentiable in the logits (`binary_loss`).

Where the prompts come from. Every task but one is cut from real code of the corpus (the
standard library by default, `jaxsae.text.corpus`), located exactly with `tokenize` and `ast`
on byte offsets: a site is a position in a file whose next byte is one candidate, and its
contrast partner is the same prompt with a minimal edit (one bracket or quote swapped, a keyword
swapped, a decorator line added...) that makes the other candidate the right answer. So each
pair holds one verbatim prompt and one edited one, and the two differ only in the evidence the
task is about; `ContrastPair.origin` says which of A and B is verbatim. Pairs are balanced,
as far as the corpus allows, between verbatim-A and verbatim-B (not far for bracket_depth, whose
nested "]]" displays are rare, and self_in_method, whose classmethods are: their pairs are
mostly verbatim on the flat-list and the self side).

`variable_type` is templated: an accumulator initialised with set() or '' and used a few lines
later is rare in real code (none with set() and 2 with '' within 8 lines in the 3.11 stdlib's
validation split), so its prompts come from a template whose identifiers are drawn from the
corpus. The tasks (candidates tok / alt):

  closing_quote         '  / "    before the closing quote of a one-line string literal
  bracket_depth         ]  / \\n   after the "]" of a list display ending its line: nested or flat
  variable_type         .  / " "  after an accumulator's name: set() (.add) or '' (+=); templated
  closing_bracket_type  )  / ]    before the closer of a one-line ( ) or [ ] pair
  dict_vs_list          :  / ,    after the first element of a {dict} or [list] display
  header_colon          :  / \\n   after the expression of an if/elif/while header or a return
  self_in_method        s  / c    after "def name(" of a method: plain (self) or @classmethod (cls)
  eq_vs_assign          =  / " "  after "X =": in an if/elif/while header (==) or an assignment
  for_in                i  / =    after "X ": in a for header (in) or an assignment

Prompts start with the separator token (the model's start-of-document token) and then a window
of code that starts at a logical line of the file, as long as fits in `max_len` tokens; the
model uses learned absolute positions, so `Task.batch` right-pads the prompts and returns the
index of each prompt's last real token (the padding, after it, cannot affect its logits in a
causal model).

Nonsense controls (`<task>_nonsense`) keep a task's prompts but re-deal its labels by a
fixed-seed random permutation: no circuit can reach low loss on them except by memorising
prompts, so a pruning method that does is overfitting.
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
import zlib
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.text.tokenizer import ByteTokenizer, Tokenizer

NONSENSE_SUFFIX = "_nonsense"
MIN_MAX_LEN = 32
CHANCE_LOSS = float(2 * np.log(2))


# --------------------------------------------------------------------------------------------
# Examples, pairs, tasks.


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
  """One prompt (int32 token ids, starting with the separator) and its answer token id."""

  prompt_ids: np.ndarray
  answer: int


@dataclasses.dataclass(frozen=True, eq=False)
class ContrastPair:
  """A's answer is the task's tok, B's is its alt.

  origin: "a" when A is verbatim corpus code and B its edit, "b" the other way round,
    "template" for templated prompts, "shuffled" for the pairs of a nonsense control.
  """

  a: Example
  b: Example
  origin: str = "a"


@dataclasses.dataclass(frozen=True)
class PairBatch:
  """Right-padded prompts: (N, T) int32 token ids and (N,) int32 index of the last real token."""

  tokens_a: np.ndarray
  last_a: np.ndarray
  tokens_b: np.ndarray
  last_b: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
  """A binary next-token task: contrast pairs whose answers are the token ids tok and alt.

  tok_text, alt_text: the candidates as text. source: "corpus" or "template" (see the module
  docstring); control_of: for a nonsense control, the task whose prompts it re-labels.
  """

  name: str
  description: str
  tok: int
  alt: int
  pairs: list[ContrastPair]
  tok_text: str = ""
  alt_text: str = ""
  separator_id: int = ByteTokenizer.separator_id
  tokenizer_spec: str = "bytes"
  source: str = "corpus"
  control_of: str | None = None

  def __len__(self) -> int:
    return len(self.pairs)

  def max_prompt_len(self) -> int:
    return max((len(e.prompt_ids) for p in self.pairs for e in (p.a, p.b)), default=0)

  def batch(self, max_len: int | None = None) -> PairBatch:
    """Prompts right-padded (with the separator) to `max_len` tokens (default: the longest),
    with the index of each one's last real token, where its answer is scored."""
    width = self.max_prompt_len() if max_len is None else int(max_len)
    if self.max_prompt_len() > width:
      raise JaxsaeError(
        f"task {self.name} has prompts of {self.max_prompt_len()} tokens, longer than "
        f"max_len={width}; pass a larger max_len or rebuild the task with this max_len"
      )

    def pad(examples):
      tokens = np.full((len(examples), width), self.separator_id, np.int32)
      last = np.zeros(len(examples), np.int32)
      for row, e in enumerate(examples):
        tokens[row, : len(e.prompt_ids)] = e.prompt_ids
        last[row] = len(e.prompt_ids) - 1
      return tokens, last

    tokens_a, last_a = pad([p.a for p in self.pairs])
    tokens_b, last_b = pad([p.b for p in self.pairs])
    return PairBatch(tokens_a, last_a, tokens_b, last_b)


# --------------------------------------------------------------------------------------------
# The loss.


def binary_loss(logits_a, logits_b, tok: int, alt: int) -> tuple[jax.Array, jax.Array]:
  """(mean over pairs of −[log p₂(tok|A) + log p₂(alt|B)], accuracy over the 2N examples).

  logits_a, logits_b: (..., V) logits at the last position of the A and B prompts; p₂ is the
  softmax over just the tok and alt logits. Differentiable in the logits.
  """
  logits_a, logits_b = jnp.asarray(logits_a), jnp.asarray(logits_b)
  margin_a = logits_a[..., tok] - logits_a[..., alt]
  margin_b = logits_b[..., alt] - logits_b[..., tok]
  loss = jnp.mean(jax.nn.softplus(-margin_a) + jax.nn.softplus(-margin_b))
  accuracy = (jnp.mean(margin_a > 0) + jnp.mean(margin_b > 0)) / 2
  return loss, accuracy


def last_logits(logits_NxTxV, last_N) -> jax.Array:
  """(N, V): each row's logits at its index `last`."""
  logits_NxTxV = jnp.asarray(logits_NxTxV)
  index = jnp.asarray(last_N, jnp.int32)[:, None, None]
  return jnp.take_along_axis(logits_NxTxV, index, axis=1)[:, 0]


def evaluate_task(lm, task: Task, max_len: int | None = None, batch_size: int = 64) -> dict:
  """{loss, accuracy, n_pairs} of a `LanguageModel` on a task (see `binary_loss`).

  Prompts are right-padded to `max_len` (default: the longest prompt rounded up to a multiple
  of 64, at most the model's context, so that tasks share few compiled shapes); rows run in
  fixed batches of `batch_size`.
  """
  if lm.tokenizer.spec() != task.tokenizer_spec:
    raise JaxsaeError(
      f"task {task.name} was built with tokenizer {task.tokenizer_spec!r} but the model uses "
      f"{lm.tokenizer.spec()!r}; rebuild the task with the model's tokenizer (lm.tokenizer)"
    )
  if not task.pairs:
    raise JaxsaeError(f"task {task.name} has no pairs; build it with n_pairs >= 1")
  longest = task.max_prompt_len()
  if longest > lm.config.max_len:
    raise JaxsaeError(
      f"task {task.name} has prompts of up to {longest} tokens but the model reads at most "
      f"{lm.config.max_len}; rebuild the task with max_len={lm.config.max_len}"
    )
  width = min(-(-longest // 64) * 64, lm.config.max_len) if max_len is None else int(max_len)
  if not longest <= width <= lm.config.max_len:
    raise JaxsaeError(
      f"max_len={width} must be between the longest prompt of task {task.name} ({longest} "
      f"tokens) and the model's context ({lm.config.max_len}); pass one in that range or None"
    )
  b = task.batch(width)
  tokens = np.concatenate([b.tokens_a, b.tokens_b])
  last = np.concatenate([b.last_a, b.last_b])
  rows = []
  for lo in range(0, len(tokens), batch_size):
    chunk, chunk_last = tokens[lo : lo + batch_size], last[lo : lo + batch_size]
    n = len(chunk)
    if n < batch_size:  # keep one compiled shape
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - n, axis=0)])
      chunk_last = np.concatenate([chunk_last, np.repeat(chunk_last[:1], batch_size - n)])
    logits, _ = lm.run(chunk)
    rows.append(np.asarray(last_logits(logits, chunk_last))[:n])
  final = np.concatenate(rows)
  loss, accuracy = binary_loss(final[: len(task)], final[len(task) :], task.tok, task.alt)
  return {"loss": float(loss), "accuracy": float(accuracy), "n_pairs": len(task)}


def evaluate_suite(lm, suite: Mapping[str, Task], max_len: int | None = None) -> dict:
  """{task name: evaluate_task(...)} for every task of a suite."""
  return {name: evaluate_task(lm, task, max_len) for name, task in suite.items()}


# --------------------------------------------------------------------------------------------
# Python source with byte offsets.


@dataclasses.dataclass(frozen=True)
class _Site:
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


class _Source:
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
  def parse(cls, data: bytes) -> _Source | None:
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

  def prompts(self, site: _Site, max_len: int) -> tuple[bytes, bytes] | None:
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


def _indent_before(src: _Source, at: int) -> bytes | None:
  """The whitespace from the start of `at`'s line up to `at`, or None if code precedes it."""
  line = src.data.rfind(b"\n", 0, at) + 1
  head = src.data[line:at]
  return head if head.strip(b" \t") == b"" else None


def _closing_quote(src: _Source) -> list[_Site]:
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
    sites.append(_Site(cut, opening, ((opening, opening + 1, other),), quote == "'"))
  return sites


def _bracket_depth(src: _Source) -> list[_Site]:
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
      sites.append(_Site(e - 1, s, ((s, s + 1, b""),), True))
    elif not isinstance(inner, ast.List):
      sites.append(_Site(e, s, ((s, s, b"["),), False))
  return sites


_NO_SWAP_OPS = {"=", ":", ":=", "**"}


def _closing_bracket_type(src: _Source) -> list[_Site]:
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
    sites.append(_Site(cut, s, ((s, s + 1, swap),), closer.string == ")"))
  return sites


def _dict_vs_list(src: _Source) -> list[_Site]:
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
    sites.append(_Site(cut, s, ((s, s + 1, swap),), is_tok))
  return sites


_HEADER = re.compile(rb"(if|elif|while) ")


def _header_colon(src: _Source) -> list[_Site]:
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
        sites.append(_Site(ve, s, ((s, vs, b"if "),), False))
    elif _HEADER.fullmatch(keyword_) and src.at(ve, ve + 1) == b":":
      sites.append(_Site(ve, s, ((s, vs, b"return "),), True))
  return sites


def _eq_vs_assign(src: _Source) -> list[_Site]:
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
        sites.append(_Site(te + 2, s, ((s, s, b"if "),), False))
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
      sites.append(_Site(le + 2, s, ((s, ls, b""),), True))
  return sites


def _for_in(src: _Source) -> list[_Site]:
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
        sites.append(_Site(te + 1, s, ((s, ts, b""),), True))
      continue
    if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
      continue
    s, _ = src.span(node)
    ts, te = src.span(node.targets[0])
    if ts == s and src.at(te, te + 3) == b" = " and _indent_before(src, s) is not None:
      sites.append(_Site(te + 1, s, ((s, s, b"for "),), False))
  return sites


def _self_in_method(src: _Source) -> list[_Site]:
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
        sites.append(_Site(cut, s, ((s, s, b"@classmethod\n" + indent),), True))
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
          sites.append(_Site(cut, at, ((at, s, b""),), False))
  return sites


# --------------------------------------------------------------------------------------------
# Templated prompts.

_KEYWORDS = frozenset(keyword.kwlist) | frozenset(getattr(keyword, "softkwlist", ()))
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{1,11}")
_AVOID = _KEYWORDS | frozenset(dir(builtins)) | {"self", "cls"}
# Used only when the documents hold too few identifiers (tiny test corpora).
_FALLBACK_NAMES = (
  "items", "result", "names", "value", "seen", "text", "parts", "line", "key", "data", "chars",
  "words", "out", "buf", "entry", "path", "node", "tokens", "word", "item", "prefix", "suffix",
)  # fmt: skip
_MIN_NAMES = 16


def _identifiers(src: _Source) -> set[str]:
  return {
    t.string
    for i, t in enumerate(src.tokens)
    if t.type == tokenize.NAME
    and src.code[i]
    and _IDENTIFIER.fullmatch(t.string)
    and t.string not in _AVOID
  }


def _variable_type(rng: np.random.Generator, names: list[str]) -> tuple[bytes, bytes]:
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


# --------------------------------------------------------------------------------------------
# The task table and builders.


@dataclasses.dataclass(frozen=True)
class _Spec:
  description: str
  tok: str
  alt: str
  extract: Callable[[_Source], list[_Site]] | None = None
  template: Callable[[np.random.Generator, list[str]], tuple[bytes, bytes]] | None = None


_SPECS: dict[str, _Spec] = {
  "closing_quote": _Spec(
    "a one-line string literal before its closing quote: ' if it opened with ', \" if with \"",
    "'",
    '"',
    _closing_quote,
  ),
  "bracket_depth": _Spec(
    'a list display ending its line, just after a "]": "]" if it closed an inner list '
    '(the line ends "]]"), newline if the list was flat',
    "]",
    "\n",
    _bracket_depth,
  ),
  "variable_type": _Spec(
    'templated: in a loop that accumulates into a variable, after its name: "." if it was '
    'initialised with set() (.add), " " if with an empty string (+=)',
    ".",
    " ",
    template=_variable_type,
  ),
  "closing_bracket_type": _Spec(
    'before the closer of a one-line bracket pair: ")" if the innermost open bracket is "(", '
    '"]" if it is "["',
    ")",
    "]",
    _closing_bracket_type,
  ),
  "dict_vs_list": _Spec(
    'after the first element of a display: ":" if it opened with "{" (a dict key), "," if '
    'with "[" (a list element)',
    ":",
    ",",
    _dict_vs_list,
  ),
  "header_colon": _Spec(
    'after a one-line expression: ":" if the line opened with if/elif/while (a header), '
    "newline if with return",
    ":",
    "\n",
    _header_colon,
  ),
  "self_in_method": _Spec(
    'after "def name(" of a method in a class body: "s" (self) for a plain method, "c" (cls) '
    "under @classmethod",
    "s",
    "c",
    _self_in_method,
  ),
  "eq_vs_assign": _Spec(
    'after "X =": "=" (a comparison) if the line opened with if/elif/while, " " (an '
    "assignment) if X starts the statement",
    "=",
    " ",
    _eq_vs_assign,
  ),
  "for_in": _Spec(
    'after "X " where X is a name: "i" (in) if the line opened with for, "=" (an assignment) '
    "if X starts the statement",
    "i",
    "=",
    _for_in,
  ),
}
TASK_NAMES: tuple[str, ...] = tuple(_SPECS)
TASK_DESCRIPTIONS: dict[str, str] = {name: spec.description for name, spec in _SPECS.items()}
TEMPLATED_TASKS: tuple[str, ...] = tuple(n for n, s in _SPECS.items() if s.template is not None)


def extract_pairs(name: str, source: bytes, max_len: int = 256) -> list[tuple[bytes, bytes]]:
  """(tok prompt, alt prompt) byte strings, without the separator, of every clean site of a
  corpus task in one source file, in the order of the cut; [] for a file that does not parse
  and for templated tasks."""
  spec = _spec(name)
  src = _Source.parse(source)
  if src is None or spec.extract is None:
    return []
  sites = sorted(spec.extract(src), key=lambda s: s.cut)
  return [p for p in (src.prompts(s, max_len) for s in sites) if p is not None]


def build_task(
  name: str,
  docs: list[bytes],
  tokenizer: Tokenizer | None = None,
  n_pairs: int = 64,
  max_len: int = 256,
  seed: int = 0,
) -> Task:
  """One task (or, for "<task>_nonsense", its control) with `n_pairs` pairs drawn by `seed`
  from the documents; identical to the same task of `build_suite` with the same arguments."""
  base = name.removesuffix(NONSENSE_SUFFIX)
  _spec(base)
  tasks = _build([base], docs, tokenizer, n_pairs, max_len, seed)
  return nonsense(tasks[base], seed) if name != base else tasks[base]


def build_suite(
  docs: list[bytes],
  tokenizer: Tokenizer | None = None,
  n_pairs: int = 64,
  max_len: int = 256,
  seed: int = 0,
  controls: bool = True,
  names: Iterable[str] = TASK_NAMES,
) -> dict[str, Task]:
  """Every task of `names` (default all), then with `controls` each one's nonsense control
  named "<task>_nonsense". Each document is parsed once for all tasks."""
  names = list(names)
  for name in names:
    _spec(name)
  tasks = _build(names, docs, tokenizer, n_pairs, max_len, seed)
  if controls:
    tasks.update({n + NONSENSE_SUFFIX: nonsense(tasks[n], seed) for n in names})
  return tasks


def nonsense(task: Task, seed: int = 0) -> Task:
  """The control of a task: the same 2N prompts with the N tok and N alt labels dealt out by a
  random permutation (by `seed` and the task name; never the identity unless N < 1), then
  paired again tok-labelled with alt-labelled in prompt order."""
  examples = [p.a for p in task.pairs] + [p.b for p in task.pairs]
  labels = np.array([task.tok] * len(task) + [task.alt] * len(task))
  rng = np.random.default_rng([seed, zlib.crc32(task.name.encode())])
  shuffled = labels
  while len(task) and np.array_equal(shuffled, labels):
    shuffled = labels[rng.permutation(len(labels))]
  a = [Example(examples[k].prompt_ids, task.tok) for k in np.flatnonzero(shuffled == task.tok)]
  b = [Example(examples[k].prompt_ids, task.alt) for k in np.flatnonzero(shuffled == task.alt)]
  return dataclasses.replace(
    task,
    name=task.name + NONSENSE_SUFFIX,
    description=f"control: the prompts of {task.name} with randomly permuted labels",
    pairs=[ContrastPair(x, y, "shuffled") for x, y in zip(a, b, strict=True)],
    control_of=task.name,
  )


def _spec(name: str) -> _Spec:
  if name not in _SPECS:
    raise JaxsaeError(
      f'unknown circuit task "{name}"; use one of {list(TASK_NAMES)}, or a name plus '
      f'"{NONSENSE_SUFFIX}" for its control'
    )
  return _SPECS[name]


def _candidate_ids(name: str, tokenizer: Tokenizer) -> tuple[int, int]:
  spec, ids = _SPECS[name], []
  for text in (spec.tok, spec.alt):
    encoded = np.asarray(tokenizer.encode(text)).reshape(-1)
    if len(encoded) != 1:
      raise JaxsaeError(
        f"task {name} needs its candidate {text!r} to be a single token, but tokenizer "
        f"{tokenizer.spec()!r} encodes it as {len(encoded)} tokens; use the byte tokenizer "
        f'("bytes") or leave this task out (build_suite(..., names=...))'
      )
    ids.append(int(encoded[0]))
  if ids[0] == ids[1]:
    raise JaxsaeError(
      f"tokenizer {tokenizer.spec()!r} maps both candidates of task {name} to token {ids[0]}; "
      'use the byte tokenizer ("bytes")'
    )
  return ids[0], ids[1]


def _task_rng(seed: int, name: str) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(name.encode()), 1])


def _build(names, docs, tokenizer, n_pairs, max_len, seed) -> dict[str, Task]:
  tokenizer = ByteTokenizer() if tokenizer is None else tokenizer
  if int(n_pairs) < 1:
    raise JaxsaeError(f"n_pairs must be at least 1, got {n_pairs}")
  if int(max_len) < MIN_MAX_LEN:
    raise JaxsaeError(
      f"max_len must be at least {MIN_MAX_LEN} tokens to hold a prompt, got {max_len}"
    )
  n_pairs, max_len = int(n_pairs), int(max_len)
  candidates = {name: _candidate_ids(name, tokenizer) for name in names}
  docs = [bytes(d) for d in docs]
  corpus = [n for n in names if _SPECS[n].extract is not None]
  templated = [n for n in names if _SPECS[n].template is not None]
  # Per task, the sites of each file whose verbatim prompt is the tok one / the alt one.
  pools = {n: ([], []) for n in corpus}
  seen = {n: set() for n in corpus}
  rngs = {n: _task_rng(seed, n) for n in names}
  # Scanning stops once enough pairs are found counting at most `cap` per file and side, so
  # that the pairs, drawn round-robin over files, come from many files.
  cap = max(2, -(-n_pairs // 8))
  identifiers: set[str] = set()
  name_docs = 0  # identifiers come from the first files parsed, whatever the tasks

  def done(n: str) -> bool:
    tok_side, alt_side = (sum(min(len(f), cap) for f in side) for side in pools[n])
    return (tok_side >= n_pairs and alt_side >= n_pairs) or tok_side + alt_side >= 4 * n_pairs

  parsed = 0
  for d in np.random.default_rng(seed).permutation(len(docs)):
    if all(done(n) for n in corpus) and (not templated or name_docs >= 16):
      break
    src = _Source.parse(docs[d])
    if src is None:
      continue
    parsed += 1
    if name_docs < 16:
      identifiers |= _identifiers(src)
      name_docs += 1
    for n in corpus:
      if done(n):
        continue
      sides = ([], [])
      for site in _SPECS[n].extract(src):
        pair = src.prompts(site, max_len)
        if pair is not None and pair not in seen[n]:
          seen[n].add(pair)
          sides[0 if site.real_is_tok else 1].append(pair)
      for side, found in zip(pools[n], sides, strict=True):
        if found:
          side.append(found)

  sep = tokenizer.separator_id

  def encode(text: bytes) -> np.ndarray:
    return np.concatenate([[sep], tokenizer.encode(text)]).astype(np.int32)

  tasks = {}
  for n in names:
    spec, (tok, alt), rng = _SPECS[n], candidates[n], rngs[n]
    if spec.extract is not None:
      chosen = _balanced(*pools[n], n_pairs, rng)
      if len(chosen) < n_pairs:
        raise JaxsaeError(
          f"task {n} found only {len(chosen)} of the {n_pairs} contrast pairs asked for in "
          f"{len(docs)} documents ({parsed} of them parseable Python); pass more documents "
          "(e.g. corpus.discover().read('train')), a larger max_len, or a smaller n_pairs"
        )
      source = "corpus"
    else:
      chosen = _templated(spec, rng, identifiers, n_pairs, max_len)
      source = "template"
    pairs = []
    for tok_text, alt_text, origin in chosen:
      a, b = encode(tok_text), encode(alt_text)
      if max(len(a), len(b)) > max_len:
        raise JaxsaeError(
          f"tokenizer {tokenizer.spec()!r} gives a task {n} prompt of {max(len(a), len(b))} "
          f"tokens from at most {max_len - 1} bytes; use a tokenizer whose tokens are at least "
          "one byte each"
        )
      pairs.append(ContrastPair(Example(a, tok), Example(b, alt), origin))
    tasks[n] = Task(
      n, spec.description, tok, alt, pairs, spec.tok, spec.alt, sep, tokenizer.spec(), source
    )
  return tasks


def _balanced(tok_files: list, alt_files: list, n: int, rng: np.random.Generator) -> list:
  """n pairs, half with the verbatim prompt on each side as far as the sides allow, each side
  drawn round-robin over its files (in random order, sites in random order within a file)."""

  def round_robin(files: list) -> list:
    files = [[f[k] for k in rng.permutation(len(f))] for f in files]
    ranked = [(r, order, p) for order, f in enumerate(files) for r, p in enumerate(f)]
    keys = rng.permutation(len(files))
    return [p for _, _, p in sorted(ranked, key=lambda x: (x[0], keys[x[1]]))]

  tok_side, alt_side = round_robin(tok_files), round_robin(alt_files)
  want_tok = min(len(tok_side), (n + int(rng.integers(2))) // 2)
  want_alt = min(len(alt_side), n - want_tok)
  want_tok = min(len(tok_side), n - want_alt)
  chosen = [(*p, "a") for p in tok_side[:want_tok]] + [(*p, "b") for p in alt_side[:want_alt]]
  return [chosen[k] for k in rng.permutation(len(chosen))]


def _templated(spec: _Spec, rng, identifiers: set[str], n: int, max_len: int) -> list:
  names = sorted(identifiers)
  if len(names) < _MIN_NAMES:
    names = sorted(set(names) | set(_FALLBACK_NAMES))
  chosen, seen = [], set()
  for _ in range(50 * n):
    pair = spec.template(rng, names)
    if max(len(p) for p in pair) <= max_len - 1 and pair not in seen:
      seen.add(pair)
      chosen.append((*pair, "template"))
      if len(chosen) == n:
        return chosen
  raise JaxsaeError(
    f"could not make {n} distinct templated prompts of at most {max_len} tokens ({len(chosen)} "
    "made); raise max_len or lower n_pairs"
  )
