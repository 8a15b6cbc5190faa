"""A circuit task (jaxsae.sparse.tasks): right-padded batches, the binary loss against a hand
computation, and the shipped model on closing_quote."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.errors import JaxsaeError
from jaxsae.models import pretrained
from jaxsae.sparse import tasks
from jaxsae.sparse.task_suite import build_task
from jaxsae.sparse.tasks import binary_loss, evaluate_task
from jaxsae.text import corpus

N_PAIRS, MAX_LEN = 16, 128


def test_batch_right_pads_with_the_separator():
  task = build_task("variable_type", [], n_pairs=N_PAIRS, max_len=MAX_LEN)
  batch = task.batch(MAX_LEN)
  assert batch.tokens_a.shape == batch.tokens_b.shape == (N_PAIRS, MAX_LEN)
  for row, pair in enumerate(task.pairs):
    for tokens, last, e in (
      (batch.tokens_a, batch.last_a, pair.a),
      (batch.tokens_b, batch.last_b, pair.b),
    ):
      n = len(e.prompt_ids)
      assert last[row] == n - 1
      np.testing.assert_array_equal(tokens[row, :n], e.prompt_ids)
      assert (tokens[row, n:] == 256).all()
  assert task.batch().tokens_a.shape[1] == task.max_prompt_len()
  with pytest.raises(JaxsaeError, match="longer than max_len"):
    task.batch(task.max_prompt_len() - 1)


def test_binary_loss_matches_a_hand_computation():
  tok, alt = 0, 2
  logits_a = jnp.array([[2.0, 0.5, -1.0], [0.0, 5.0, 1.0]])
  logits_b = jnp.array([[0.0, 1.0, 3.0], [0.5, -2.0, 0.0]])

  def log_p2(logits, answer, other):
    return logits[answer] - np.logaddexp(logits[answer], logits[other])

  expected = -np.mean(
    [
      log_p2(np.asarray(logits_a[i]), tok, alt) + log_p2(np.asarray(logits_b[i]), alt, tok)
      for i in range(2)
    ]
  )
  loss, accuracy = binary_loss(logits_a, logits_b, tok, alt)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  assert float(loss) == pytest.approx(
    -(np.log(np.exp(2) / (np.exp(2) + np.exp(-1))) + np.log(np.exp(3) / (1 + np.exp(3)))) / 2
    - (np.log(1 / (1 + np.exp(1))) + np.log(1 / (1 + np.exp(0.5)))) / 2,
    rel=1e-6,
  )
  # A1 right, A2 wrong (0 < 1), B1 right, B2 wrong (0 < 0.5).
  assert float(accuracy) == 0.5
  grad_a, grad_b = jax.grad(lambda a, b: binary_loss(a, b, tok, alt)[0], argnums=(0, 1))(
    logits_a, logits_b
  )
  # Raising the right answer's logit lowers the loss, raising the other's raises it, and the
  # other tokens do not enter p₂.
  assert (grad_a[:, tok] < 0).all() and (grad_a[:, alt] > 0).all()
  assert (grad_b[:, alt] < 0).all() and (grad_b[:, tok] > 0).all()
  assert (grad_a[:, 1] == 0).all() and (grad_b[:, 1] == 0).all()
  p_tok_a1 = np.exp(2) / (np.exp(2) + np.exp(-1))
  np.testing.assert_allclose(float(grad_a[0, tok]), -(1 - p_tok_a1) / 2, rtol=1e-5)
  # Chance: equal logits give 2 ln 2 per pair.
  zeros = jnp.zeros((3, 4))
  assert float(binary_loss(zeros, zeros, 1, 3)[0]) == pytest.approx(tasks.CHANCE_LOSS)


@pytest.mark.slow
def test_the_shipped_model_solves_closing_quote():
  docs = corpus.discover("stdlib", "**/*.py", 0.02, 0.02).read("validation")
  lm = pretrained.load("default")
  task = build_task("closing_quote", docs, lm.tokenizer, n_pairs=64, max_len=128, seed=0)
  result = evaluate_task(lm, task)
  assert result["n_pairs"] == 64
  assert result["accuracy"] >= 0.8
  assert result["loss"] < 0.5 * tasks.CHANCE_LOSS
  with pytest.raises(JaxsaeError, match="tokenizer"):
    evaluate_task(lm, dataclasses.replace(task, tokenizer_spec="bpe:other.json"))
