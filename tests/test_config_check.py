"""Config validation: every problem at once, close-match suggestions, the shipped configs pass."""

import pytest

from conftest import REPO, load_config
from jaxsae import config_check
from jaxsae.errors import ConfigError
from jaxsae.lm import config as lm_config


def test_unknown_and_missing_keys_are_reported_together():
  schema = lm_config.base_config()
  config = lm_config.base_config()
  config.unlock()
  config.optim.lrr = 1.0
  config.modle = {}
  del config.train["steps"]
  with pytest.raises(ConfigError) as info:
    config_check.validate(config, schema)
  problems = info.value.problems
  assert 'unknown key "optim.lrr"; did you mean "optim.lr"?' in problems
  assert any(p.startswith('unknown key "modle"; did you mean "model"?') for p in problems)
  assert 'missing key "train.steps"; add it (default: 1000)' in problems


@pytest.mark.parametrize("path", sorted((REPO / "experiments" / "configs").glob("lm_*.py")))
def test_every_shipped_lm_config_validates(path):
  lm_config.validate(load_config(path.stem), n_devices=8)


def test_model_field_errors_surface_in_the_lm_config():
  config = lm_config.base_config()
  config.model.activation = "gelu_new"
  config.model.d_model = 0
  with pytest.raises(ConfigError) as info:
    lm_config.validate(config)
  message = str(info.value)
  assert "model.activation='gelu_new' is not one of" in message and "did you mean" in message
  assert "model.d_model=0 must be a positive int" in message


def test_main_job_config_lists_every_problem_before_any_compute():
  from jaxsae import main_job

  config = main_job.base_config("topk")
  config.sae.k = 5000
  config.optim.lr = -2.0
  config.harvest.hook = "blocks.1.resid_postt"
  config.harvest.dtype = "float8"
  config.harvest.skip_first = 500
  config.train.batch_size = 1001
  with pytest.raises(ConfigError) as info:
    main_job.validate(config)  # Loads no model, harvests nothing.
  message = str(info.value)
  for expected in (
    "sae.k=5000 must be in [1, n_latents=1024]",
    "optim.lr=-2.0 must be positive",
    'did you mean "blocks.1.resid_post"?',
    "harvest.dtype='float8'",
    "harvest.skip_first=500",
    "batch size 1001 is not divisible by the data axis (8 devices)",  # conftest's 8 devices.
  ):
    assert expected in message, expected
  assert len(info.value.problems) >= 5


@pytest.mark.parametrize(
  "hook, problem",
  [
    ("blocks.1.resid_post", None),
    ("logits", None),
    ("blocks.x.resid_post", "must read blocks.<layer>.<site>"),
    ("final.norm", 'did you mean "final.normed"?'),
    ("blocks.2.mlp.postt", 'did you mean "blocks.2.mlp.post"?'),
  ],
)
def test_hook_names_are_checked_without_a_model(hook, problem):
  from jaxsae.models import hooks

  found = hooks.name_problem(hook)
  assert found is None if problem is None else problem in found


def test_a_pruning_config_lists_every_problem_before_loading_a_model(tmp_path):
  from jaxsae.sparse import study

  for variant in ("default", "frontier", "quick"):
    assert study.problems(load_config("prune", variant)) == [], variant
  config = load_config("prune", "quick")
  config.tasks = "closing_quote,closing_quotes"
  config.views = "sparse_closing_quote"
  config.n_train_pairs = 0
  config.prune.lr = -1.0
  config.prune.steps = 0
  with pytest.raises(ConfigError) as info:
    study.run(config, tmp_path)
  message = str(info.value)
  for expected in (
    "tasks='closing_quotes' is not one of",
    'did you mean "closing_quote"?',
    '"sparse_closing_quote" in views/published_circuits must read "<model>/<task>"',
    "n_train_pairs=0 must be an int >= 1",
    "prune.lr=-1.0 must be positive",
    "prune.steps=0 must be at least 1",
  ):
    assert expected in message, expected
  assert not list(tmp_path.iterdir())  # Nothing was written.
