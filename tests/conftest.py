"""Shared test setup: 8 forced CPU devices (set before jax is imported) and tiny real configs."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import importlib.util  # noqa: E402
import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxsae.models.config import TransformerConfig  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent


def load_config(name: str, arg: str | None = None):
  """`get_config()` of experiments/configs/<name>.py, as config_flags would load it."""
  path = REPO / "experiments" / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


@pytest.fixture(scope="session", autouse=True)
def _eight_devices():
  assert jax.device_count() == 8, "tests expect 8 forced CPU devices (see conftest.py)"


def tiny_model_config(**overrides) -> TransformerConfig:
  values = dict(vocab_size=257, d_model=32, n_layers=2, n_heads=2, d_head=16, d_mlp=64, max_len=32)
  values.update(overrides)
  return TransformerConfig(**values)


def tiny_circuit_config(**overrides) -> TransformerConfig:
  """The circuits paper's architecture at toy size: RMSNorm, untied, no biases."""
  values = dict(d_model=16, d_head=8, d_mlp=32, norm="rmsnorm", use_bias=False)
  return tiny_model_config(**{**values, "tied_embeddings": False, **overrides})
