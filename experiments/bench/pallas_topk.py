"""The sparse TopK path's three primitives: XLA (`jaxsae.sae.sparse_topk`) against the Pallas
kernels (`jaxsae.sae.pallas_topk`), each timed alone on whatever backend this runs on.

  python -m experiments.bench.pallas_topk --json=pallas_topk.json   # d=768, n=16384, k=32, B=4096
  python -m experiments.bench.pallas_topk --d=64 --n=1024 --k=8 --batch=256

Compiled Pallas needs a GPU (Triton lowering). Elsewhere it says so and times XLA only; --interpret
runs the kernels in interpret mode instead (a correctness check, never a speed figure). The JSON
holds seconds per call (median of --repeats after a compile run), XLA/Pallas speedups and the
largest difference between the two, so `pallas_topk.kernels("auto")` can be switched on evidence.
"""

import functools
import json
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from jaxsae.sae import pallas_topk

_D = flags.DEFINE_integer("d", 768, "Input width.")
_N = flags.DEFINE_integer("n", 16384, "Latents (table rows).")
_K = flags.DEFINE_integer("k", 32, "Active latents per token.")
_BATCH = flags.DEFINE_integer("batch", 4096, "Tokens.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Table and v dtype.")
_BLOCK_B = flags.DEFINE_integer("block_b", pallas_topk.BLOCK_B, "Pallas tokens per program (cap).")
_BLOCK_D = flags.DEFINE_integer("block_d", pallas_topk.BLOCK_D, "Pallas columns per program (cap).")
_INTERPRET = flags.DEFINE_bool("interpret", False, "Run Pallas in interpret mode (not a timing).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per kernel.")
_JSON = flags.DEFINE_string("json", None, "Write the figures here.")


def seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def inputs(d: int, n: int, k: int, b: int, dtype):
  """A table, distinct top-k-like indices per token (some set to n, "not held here"), weights
  zeroed there as the callers do, and a B x D right-hand side."""
  keys = jax.random.split(jax.random.key(0), 4)
  idx = jax.lax.top_k(jax.random.uniform(keys[0], (b, n)), k)[1]
  idx = idx.at[::7, -1].set(n)
  w = jnp.where(idx < n, jax.random.normal(keys[1], (b, k)), 0)
  table = jax.random.normal(keys[2], (n, d), dtype)
  v = jax.random.normal(keys[3], (b, d), dtype)
  return table, idx, w, v


def calls(impl: pallas_topk.Kernels, n: int):
  """The three primitives as jitted functions of (table, idx, w, v)."""
  return {
    "gather_combine": jax.jit(lambda t, i, w, v: impl.gather_combine(t, i, w)),
    "gather_dots": jax.jit(lambda t, i, w, v: impl.gather_dots(t, i, v)),
    "scatter_outer": jax.jit(lambda t, i, w, v: impl.scatter_outer(n, i, w, v)),
  }


def main(argv):
  del argv
  d, n, k, b = _D.value, _N.value, _K.value, _BATCH.value
  backend = jax.default_backend()
  args = inputs(d, n, k, b, jnp.dtype(_DTYPE.value))
  figures = {
    "d": d,
    "n": n,
    "k": k,
    "batch": b,
    "dtype": _DTYPE.value,
    "backend": backend,
    "device": str(jax.devices()[0].device_kind),
    "interpret": _INTERPRET.value,
    "block_b": _BLOCK_B.value,
    "block_d": _BLOCK_D.value,
    "xla": {},
    "pallas": None,
  }
  impls = {"xla": pallas_topk.XLA}
  if pallas_topk.available(backend) or _INTERPRET.value:
    pallas = pallas_topk.kernels("pallas", backend=backend, interpret=_INTERPRET.value)
    block = functools.partial(functools.partial, block_b=_BLOCK_B.value, block_d=_BLOCK_D.value)
    impls["pallas"] = pallas_topk.Kernels(*map(block, pallas))
    figures["pallas"], figures["speedup"], figures["max_abs_diff"] = {}, {}, {}
  else:
    figures["pallas_skipped"] = (
      f"compiled Pallas kernels need a GPU (Triton lowering); backend {backend!r} has none. "
      "Timing XLA only; pass --interpret to check the kernels in interpret mode (slow, not a timing)."
    )
    print(figures["pallas_skipped"])
  results = {name: calls(impl, n) for name, impl in impls.items()}
  for op, xla_fn in results["xla"].items():
    figures["xla"][op] = seconds(xla_fn, *args)
    line = f"{op:>15}: xla {figures['xla'][op] * 1e3:9.3f} ms"
    if "pallas" in results:
      pallas_fn = results["pallas"][op]
      figures["pallas"][op] = seconds(pallas_fn, *args)
      figures["speedup"][op] = figures["xla"][op] / figures["pallas"][op]
      diff = jnp.max(jnp.abs(pallas_fn(*args).astype(jnp.float32) - xla_fn(*args)))
      figures["max_abs_diff"][op] = float(diff)
      line += (
        f"  pallas {figures['pallas'][op] * 1e3:9.3f} ms  xla/pallas "
        f"{figures['speedup'][op]:5.2f}x  max|diff| {figures['max_abs_diff'][op]:.2e}"
      )
    print(line)
  if _INTERPRET.value:
    print("interpret mode: the Pallas times are not a speed measure")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(figures, f, indent=2)


if __name__ == "__main__":
  app.run(main)
