"""A circuit task and its score: binary next-token tasks on Python code, for weight-sparse
transformers.

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

Prompts start with the separator token (the model's start-of-document token) and then a window
of code that starts at a logical line of the file, as long as fits in `max_len` tokens; the
model uses learned absolute positions, so `Task.batch` right-pads the prompts and returns the
index of each prompt's last real token (the padding, after it, cannot affect its logits in a
causal model).

The named tasks, cut from the corpus or templated, and their nonsense controls are
`jaxsae.sparse.task_suite`; finding their sites in code is `jaxsae.sparse.task_sources`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxsae.errors import JaxsaeError
from jaxsae.text.tokenizer import ByteTokenizer

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

  tok_text, alt_text: the candidates as text. source: "corpus" or "template" (see
  `jaxsae.sparse.task_suite`); control_of: for a nonsense control, the task whose prompts it
  re-labels.
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


def padded_batches(size: int, *arrays: np.ndarray):
  """Yield (n, chunk, ...) over the rows of `arrays` in chunks of `size`; the last chunk is padded
  by repeating its first row, so every call sees one shape (one compilation). n: real rows."""
  for lo in range(0, len(arrays[0]), size):
    chunks = [a[lo : lo + size] for a in arrays]
    n = len(chunks[0])
    if n < size:
      chunks = [np.concatenate([c, np.repeat(c[:1], size - n, axis=0)]) for c in chunks]
    yield (n, *chunks)


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
  for n, chunk, chunk_last in padded_batches(batch_size, tokens, last):
    logits, _ = lm.run(chunk)
    rows.append(np.asarray(last_logits(logits, chunk_last))[:n])
  final = np.concatenate(rows)
  loss, accuracy = binary_loss(final[: len(task)], final[len(task) :], task.tok, task.alt)
  return {"loss": float(loss), "accuracy": float(accuracy), "n_pairs": len(task)}


def evaluate_suite(lm, suite: Mapping[str, Task], max_len: int | None = None) -> dict:
  """{task name: evaluate_task(...)} for every task of a suite."""
  return {name: evaluate_task(lm, task, max_len) for name, task in suite.items()}
