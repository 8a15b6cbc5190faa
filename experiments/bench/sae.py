"""SAE training speed: our step per architecture, its floor and the peers (SAELens, and sparsify
for TopK), in one process.

  python -m experiments.bench.sae --out=runs/bench                 # topk, relu at d=768, n=16384
  python -m experiments.bench.sae --architectures=topk --d=128 --n=1024 --k=16 --batch=1024 \
      --out=/tmp/bench --peer=False
  python -m experiments.bench.sae --out=runs/bench --readme=README.md   # also refresh README
  python -m experiments.bench.sae --architectures=topk --d=128 --n=4096 --k=32 --batch=1024 \
      --repeats=20 --loop --out=runs/bench_main    # the main job's shape, loop included
  python -m experiments.bench.sae --out=/tmp/b --peer=False \
      --architectures=topk,topk:topk_path=dense,topk:compute_dtype=bfloat16
  python -m experiments.bench.sae --architectures=topk:transcode=True,jumprelu:layers=4 \
      --d=128 --n=4096 --k=32 --batch=1024 --repeats=20 --out=runs/bench_transcoders
      # a transcoder, and a CLT over 4 sites of width d, beside sparsify's transcoder

Writes OUT/sae_bench.json and OUT/sae_bench.md (jaxsae.bench.report); --readme replaces the
table between `<!-- bench:sae -->` and `<!-- /bench:sae -->` in that file. The peers are timed
when the `peers` extra is installed (--peer=False skips it).
"""

from absl import flags

from jaxsae import cli
from jaxsae.bench import harness, report

_ARCHITECTURES = flags.DEFINE_list(
  "architectures",
  ["topk", "relu"],
  "Architectures to time, or variants: ARCH:key=value+key=value over sae.* fields and "
  "dead_window_tokens (e.g. topk:topk_path=dense, topk:compute_dtype=bfloat16, "
  "topk:dead_window_tokens=4096 so AuxK runs).",
)
_D = flags.DEFINE_integer("d", 768, "Input width.")
_N = flags.DEFINE_integer("n", 16384, "Latents.")
_K = flags.DEFINE_integer("k", 32, "Active latents (TopK, BatchTopK).")
_BATCH = flags.DEFINE_integer("batch", 4096, "Tokens per step.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed steps per measurement (median).")
_PEER = flags.DEFINE_boolean("peer", True, "Also time SAELens and sparsify when installed.")
_LOOP = flags.DEFINE_boolean(
  "loop", False, "Also time the trainer's own loop (metrics, statistics, checkpoints)."
)
_OUT = flags.DEFINE_string("out", None, "Directory for sae_bench.json and sae_bench.md.")
_README = flags.DEFINE_string("readme", None, "Also replace the table in this README.")
flags.mark_flag_as_required("out")


def main(argv):
  del argv
  result = harness.run(
    _ARCHITECTURES.value,
    d=_D.value,
    n=_N.value,
    k=_K.value,
    batch=_BATCH.value,
    repeats=_REPEATS.value,
    peer=_PEER.value,
    loop=_LOOP.value,
    log=print,
  )
  paths = report.write(result, _OUT.value)
  print(report.markdown(result))
  if _README.value:
    report.update_readme(_README.value, result)
    paths += (_README.value,)
  print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
  cli.run(main)
