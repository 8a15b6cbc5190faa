"""LM training: learning, device-count invariance, exact resume, and errors before compute."""

import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, load_config
from jaxsae import sharding
from jaxsae.errors import ConfigError, CorpusError
from jaxsae.lm import train
from jaxsae.lm.baselines import NGramBaselines
from jaxsae.run_log import read_jsonl
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import pipeline
from jaxsae.text.tokenizer import ByteTokenizer


def tiny(**train_overrides):
  """lm_tiny on one real stdlib package (asyncio), so building a run takes milliseconds."""
  config = load_config("lm_tiny")
  config.data.corpus = str(corpus_lib.stdlib_root() / "asyncio")
  config.data.validation_fraction = config.data.test_fraction = 0.15
  config.train.eval_every = 0
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


@pytest.mark.slow
def test_short_training_beats_the_unigram_baseline(tmp_path):
  config = tiny(steps=80, eval_sequences=128)
  config.data.corpus = "stdlib"
  config.data.validation_fraction = config.data.test_fraction = 0.02
  result = train.train_and_evaluate(config, tmp_path)
  corpus = corpus_lib.discover()
  tok = ByteTokenizer()
  baselines = NGramBaselines(pipeline.load_split(corpus, "train", tok, 64).stream, tok.vocab_size)
  validation = pipeline.load_split(corpus, "validation", tok, 64).stream[: 128 * 64 + 1]
  unigram = baselines.evaluate(validation, tok.token_byte_lengths())["unigram"]
  final = result.evals[-1]
  assert final["tokens"] == 128 * 64
  assert final["loss"] < unigram.loss - 0.1, (final, unigram)
  assert result.history[-1]["loss"] < result.history[0]["loss"] - 1.0
  # The run left its metrics, events, configs and a checkpoint behind.
  assert read_jsonl(tmp_path / "metrics.jsonl", "validation")[-1]["loss"] == pytest.approx(
    final["loss"]
  )
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert json.loads((tmp_path / "model.json").read_text())["d_model"] == 32
  assert (tmp_path / "checkpoints" / "80").is_dir()


def _steps_on(mesh, config, n_steps=2):
  run = train.build(config)
  optimizer = train.make_optimizer(config.optim, config.train.steps)
  _, shardings = train.state_shardings(run.model, optimizer, mesh)
  state = train.create_state(run.model, optimizer, jax.random.key(0), shardings)
  step = jax.jit(
    train.make_train_step(run.model, optimizer),
    in_shardings=(shardings, sharding.batch_sharding(mesh)),
  )
  it = pipeline.train_batches(run.train.windows, config.train.batch_size, seed=0)
  losses = []
  for _ in range(n_steps):
    state, metrics = step(state, sharding.global_batch(next(it), mesh))
    losses.append(float(metrics["loss"]))
  return jax.device_get(state.params), losses, step, state


@pytest.mark.slow
def test_train_steps_match_across_device_counts_and_model_parallelism():
  config = tiny()
  config.model.d_mlp = 128  # Divisible by the model axis.
  ref_params, ref_losses, _, _ = _steps_on(sharding.make_mesh(1, 1), config)
  for data, model in ((8, 1), (4, 2)):
    params, losses, _, _ = _steps_on(sharding.make_mesh(data, model), config)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), params, ref_params
    )


@pytest.mark.slow
def test_data_parallel_step_reduces_gradients_without_gathering_parameters():
  config = tiny()
  mesh = sharding.make_mesh(8, 1)
  _, _, step, state = _steps_on(mesh, config, n_steps=1)
  batch = {"tokens": jnp.zeros((16, 65), jnp.int32), "weights": jnp.ones(16)}
  hlo = step.lower(state, jax.device_put(batch, sharding.batch_sharding(mesh))).compile().as_text()
  assert "all-reduce" in hlo
  assert "all-gather" not in hlo


@pytest.mark.slow
def test_stop_and_resume_gives_the_same_losses_and_resumes_on_fewer_devices(tmp_path):
  config = tiny(steps=10, log_every=1, checkpoint_every=3)
  straight = train.train_and_evaluate(config, tmp_path / "straight")
  first = train.train_and_evaluate(config, tmp_path / "resumed", stop_at_step=6)
  assert [h["step"] for h in first.history] == list(range(1, 7))
  shutil.copytree(tmp_path / "resumed", tmp_path / "fewer")  # The same step-6 checkpoint.
  second = train.train_and_evaluate(config, tmp_path / "resumed")
  assert [h["step"] for h in second.history] == list(range(7, 11))
  losses = [h["loss"] for h in straight.history]
  assert losses == [h["loss"] for h in first.history + second.history]
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(straight.state.params),
    jax.device_get(second.state.params),
  )
  # On 2 devices instead of 8: another reduction order, the same run within float rounding.
  config.mesh.data = 2
  fewer = train.train_and_evaluate(config, tmp_path / "fewer")
  assert [h["step"] for h in fewer.history] == list(range(7, 11))
  np.testing.assert_allclose([h["loss"] for h in fewer.history], losses[6:], rtol=1e-5)


def test_bad_configs_fail_before_compute_with_every_problem_named(tmp_path):
  config = tiny(batch_size=12)
  config.data.seq_len = 1
  config.train.unknown_field = 3
  config.optim.lr = -1.0
  with pytest.raises(ConfigError) as info:
    train.train_and_evaluate(config, tmp_path)
  assert 'unknown key "train.unknown_field"' in str(info.value)
  config = tiny(batch_size=12)
  config.data.seq_len = 1
  config.optim.lr = -1.0
  with pytest.raises(ConfigError) as info:
    train.train_and_evaluate(config, tmp_path)
  message = str(info.value)
  assert "data.seq_len=1 is below 2; use 2 or more" in message
  assert (
    "batch size 12 is not divisible by the data axis (8 devices); use a multiple of 8" in message
  )
  assert "optim.lr=-1.0 must be positive" in message
  assert not (tmp_path / "checkpoints").exists()


def test_bad_corpora_name_the_fix(tmp_path):
  config = tiny()
  config.data.corpus = str(tmp_path / "missing")
  with pytest.raises(CorpusError, match="does not exist; set data.corpus"):
    train.train_and_evaluate(config, tmp_path / "w")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "a.py").write_text("")
  config.data.corpus = str(tmp_path / "empty")
  with pytest.raises(CorpusError, match="no non-empty files"):
    train.train_and_evaluate(config, tmp_path / "w")


def _cli(*args):
  return subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.train_lm",
      "--config=experiments/configs/lm_tiny.py",
      *args,
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_command_line_errors_are_one_message_not_a_traceback(tmp_path):
  result = _cli(f"--workdir={tmp_path}", "--config.train.stepz=5")
  assert result.returncode == 2
  assert 'Did you mean "steps"' in result.stderr and "Traceback" not in result.stderr
  result = _cli(f"--workdir={tmp_path}", "--config.data.seq_len=1", "--config.train.batch_size=10")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "data.seq_len=1 is below 2" in result.stderr and "batch size 10" in result.stderr
