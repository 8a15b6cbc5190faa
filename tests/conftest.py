"""Shared test setup: 8 forced CPU devices (set before jax is imported) and tiny real configs."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache per test run, shared by both xdist workers (they inherit the
# controller's environment) and every child process (notebook kernels, multi-process and kill
# tests): a program one process compiled is loaded, not recompiled, by the others. Removed when
# the run ends; a cache directory the caller set is used and kept.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
    tempfile.gettempdir(), f"jaxsae-test-jax-cache-{os.getpid()}"
  )

import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402

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


def pytest_sessionfinish(session):
  """The run's compilation cache goes when the run does (in the xdist controller, after its
  workers; in a plain run, in the one process)."""
  if _OWN_CACHE and not hasattr(session.config, "workerinput"):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
