"""TopK SAE gradient step: the dense path against the sparse path (`jaxsae.sae.sparse_topk`), and
the floor (encoder matmul + top_k) in the same process.

  python -m experiments.bench.topk_step                          # d=768, n=16384, k=32, B=4096
  python -m experiments.bench.topk_step --d=128 --n=1024 --k=16 --batch=1024

Prints seconds per step (median of --repeats after a compile run) and tokens/s; --json writes them.
"""

import json
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from jaxsae.sae import sparse_topk

_D = flags.DEFINE_integer("d", 768, "Input width.")
_N = flags.DEFINE_integer("n", 16384, "Latents.")
_K = flags.DEFINE_integer("k", 32, "Active latents.")
_BATCH = flags.DEFINE_integer("batch", 4096, "Tokens per step.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per path.")
_JSON = flags.DEFINE_string("json", None, "Write the figures here.")


def dense_loss(params, x, k):
  W_enc, b_enc, W_dec, b_dec = params
  pre = (x - b_dec) @ W_enc + b_enc
  values, idx = jax.lax.top_k(pre, k)
  z = jnp.zeros_like(pre).at[jnp.arange(x.shape[0])[:, None], idx].set(jax.nn.relu(values))
  return jnp.mean(jnp.sum((z @ W_dec + b_dec - x) ** 2, -1))


def sparse_loss(params, x, k):
  W_enc, b_enc, W_dec, b_dec = params
  z, idx = sparse_topk.topk_encode(x, W_enc, b_enc, b_dec, k)
  return jnp.mean(jnp.sum((sparse_topk.sparse_decode(z, idx, W_dec, b_dec) - x) ** 2, -1))


def floor(params, x, k):
  W_enc, b_enc, _, b_dec = params
  return jax.lax.top_k((x - b_dec) @ W_enc + b_enc, k)[0]


def seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def main(argv):
  del argv
  d, n, k, b = _D.value, _N.value, _K.value, _BATCH.value
  keys = jax.random.split(jax.random.key(0), 3)
  params = (
    jax.random.normal(keys[0], (d, n)) / d**0.5,
    jnp.zeros(n),
    jax.random.normal(keys[1], (n, d)) / d**0.5,
    jnp.zeros(d),
  )
  x = jax.random.normal(keys[2], (b, d))
  figures = {"d": d, "n": n, "k": k, "batch": b, "device": str(jax.devices()[0].device_kind)}
  for name, fn in (
    ("floor", jax.jit(floor, static_argnums=2)),
    ("dense", jax.jit(jax.grad(dense_loss), static_argnums=2)),
    ("sparse", jax.jit(jax.grad(sparse_loss), static_argnums=2)),
  ):
    s = seconds(fn, params, x, k)
    figures[name] = {"seconds": s, "tokens_per_s": b / s}
    print(f"{name:>6}: {s * 1e3:8.1f} ms/step  {b / s:9.0f} tokens/s")
  print(
    f"sparse/floor {figures['sparse']['seconds'] / figures['floor']['seconds']:.2f}x, "
    f"dense/sparse {figures['dense']['seconds'] / figures['sparse']['seconds']:.2f}x"
  )
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(figures, f, indent=2)


if __name__ == "__main__":
  app.run(main)
