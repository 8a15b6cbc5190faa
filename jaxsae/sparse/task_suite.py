"""The circuit task suite (Gao et al. 2025): the named binary next-token tasks on Python code,
built from a corpus, and their nonsense controls. A task, its batches and its loss are
`jaxsae.sparse.tasks`.

Where the prompts come from. Every task but one is cut from real code of the corpus (the
standard library by default, `jaxsae.text.corpus`), located exactly with `tokenize` and `ast`
on byte offsets: a site is a position in a file whose next byte is one candidate, and its
contrast partner is the same prompt with a minimal edit (one bracket or quote swapped, a keyword
swapped, a decorator line added...) that makes the other candidate the right answer. So each
pair holds one verbatim prompt and one edited one, and the two differ only in the evidence the
task is about; `ContrastPair.origin` says which of A and B is verbatim. Pairs are balanced,
as far as the corpus allows, between verbatim-A and verbatim-B (not far for bracket_depth, whose
nested "]]" displays are rare, and self_in_method, whose classmethods are: their pairs are
mostly verbatim on the flat-list and the self side). Reading files and finding sites is
`jaxsae.sparse.task_sources`; this module holds the task table and the pairing.

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

Nonsense controls (`<task>_nonsense`) keep a task's prompts but re-deal its labels by a
fixed-seed random permutation: no circuit can reach low loss on them except by memorising
prompts, so a pruning method that does is overfitting.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterable

import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.sparse import task_sources as sources
from jaxsae.sparse.tasks import ContrastPair, Example, Task
from jaxsae.text.tokenizer import ByteTokenizer, Tokenizer

NONSENSE_SUFFIX = "_nonsense"
MIN_MAX_LEN = 32


@dataclasses.dataclass(frozen=True)
class _Spec:
  description: str
  tok: str
  alt: str
  extract: Callable[[sources.Source], list[sources.Site]] | None = None
  template: Callable[[np.random.Generator, list[str]], tuple[bytes, bytes]] | None = None


_SPECS: dict[str, _Spec] = {
  "closing_quote": _Spec(
    "a one-line string literal before its closing quote: ' if it opened with ', \" if with \"",
    "'",
    '"',
    sources.closing_quote,
  ),
  "bracket_depth": _Spec(
    'a list display ending its line, just after a "]": "]" if it closed an inner list '
    '(the line ends "]]"), newline if the list was flat',
    "]",
    "\n",
    sources.bracket_depth,
  ),
  "variable_type": _Spec(
    'templated: in a loop that accumulates into a variable, after its name: "." if it was '
    'initialised with set() (.add), " " if with an empty string (+=)',
    ".",
    " ",
    template=sources.variable_type_pair,
  ),
  "closing_bracket_type": _Spec(
    'before the closer of a one-line bracket pair: ")" if the innermost open bracket is "(", '
    '"]" if it is "["',
    ")",
    "]",
    sources.closing_bracket_type,
  ),
  "dict_vs_list": _Spec(
    'after the first element of a display: ":" if it opened with "{" (a dict key), "," if '
    'with "[" (a list element)',
    ":",
    ",",
    sources.dict_vs_list,
  ),
  "header_colon": _Spec(
    'after a one-line expression: ":" if the line opened with if/elif/while (a header), '
    "newline if with return",
    ":",
    "\n",
    sources.header_colon,
  ),
  "self_in_method": _Spec(
    'after "def name(" of a method in a class body: "s" (self) for a plain method, "c" (cls) '
    "under @classmethod",
    "s",
    "c",
    sources.self_in_method,
  ),
  "eq_vs_assign": _Spec(
    'after "X =": "=" (a comparison) if the line opened with if/elif/while, " " (an '
    "assignment) if X starts the statement",
    "=",
    " ",
    sources.eq_vs_assign,
  ),
  "for_in": _Spec(
    'after "X " where X is a name: "i" (in) if the line opened with for, "=" (an assignment) '
    "if X starts the statement",
    "i",
    "=",
    sources.for_in,
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
  src = sources.Source.parse(source)
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
    src = sources.Source.parse(docs[d])
    if src is None:
      continue
    parsed += 1
    if name_docs < 16:
      identifiers |= sources.identifiers(src)
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
  if len(names) < sources.MIN_NAMES:
    names = sorted(set(names) | set(sources.FALLBACK_NAMES))
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
