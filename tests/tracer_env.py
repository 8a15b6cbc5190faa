"""circuit-tracer 0.5.0 beside the test environment, for the agreement test.

circuit-tracer pins transformers ≤ 4.57.3 and huggingface_hub < 1.0. The test environment holds
transformers 5, whose Gemma 3 GGUF reader the real-model parity tests need (4.57.3 cannot read
those files), so the two cannot share one environment. circuit-tracer and the packages its pins
change are installed with `pip --target` (no dependencies: torch, numpy, safetensors, einops,
transformer-lens… are the test environment's) into a folder that goes first on the path of the
subprocess that runs it. The folder is cached under ~/.cache/jaxsae (JAXSAE_CACHE overrides),
named by a hash of the pins.
"""

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

PINS = (
  "circuit-tracer==0.5.0",
  "nnsight==0.6.3",  # 0.8.1, which circuit-tracer pulls, breaks its import.
  "transformers==4.57.3",
  "huggingface_hub==0.36.2",
  "tokenizers==0.22.2",
  # nnsight's own dependencies that the test environment lacks.
  "astor==0.8.1",
  "toml==0.10.2",
  "zstandard==0.25.0",
  "python-socketio==5.18.1",
  "python-engineio==4.15.1",
  "bidict==0.24.1",
  "simple-websocket==1.1.0",
  "wsproto==1.3.2",
  "websocket-client==1.9.2",
)


def site() -> pathlib.Path:
  """The side install's folder, installed on first use."""
  cache = pathlib.Path(os.environ.get("JAXSAE_CACHE", pathlib.Path.home() / ".cache" / "jaxsae"))
  tag = hashlib.sha256("\n".join(PINS).encode()).hexdigest()[:12]
  folder = cache / f"circuit-tracer-{tag}"
  if (folder / "COMPLETE").is_file():
    return folder
  partial = cache / f"circuit-tracer-{tag}.partial-{os.getpid()}"
  pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(partial)]
  done = subprocess.run([*pip, *PINS], capture_output=True, text=True)
  if done.returncode != 0:
    raise RuntimeError(f"installing circuit-tracer beside the tests failed:\n{done.stderr[-3000:]}")
  (partial / "COMPLETE").write_text("\n".join(PINS))
  try:
    partial.rename(folder)
  except OSError:  # Another worker finished first.
    shutil.rmtree(partial, ignore_errors=True)
  return folder


def run(script: pathlib.Path, *args: str, env: dict[str, str]) -> None:
  """`python script args` with the side install first on the path."""
  path = os.pathsep.join([str(site()), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  done = subprocess.run(
    [sys.executable, str(script), *args],
    env={**os.environ, **env, "PYTHONPATH": path},
    capture_output=True,
    text=True,
  )
  if done.returncode != 0:
    raise RuntimeError(f"{script.name} failed:\n{done.stderr[-5000:]}")
