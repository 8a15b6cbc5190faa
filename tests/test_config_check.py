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
