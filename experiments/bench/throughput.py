"""Throughput: harvesting against the plain forward, store reads, the weight-sparse LM step
against its dense twin (jaxsae.bench.throughput, jaxsae.bench.lm_step).

  python -m experiments.bench.throughput --out=runs/bench
  python -m experiments.bench.throughput --out=/tmp/tp --parts=lm --lm_batch=8 --repeats=3

Writes OUT/throughput.json and OUT/throughput.md. Targets (issue 7): harvest >= 0.9x the
forward's tokens/s; sparse LM step <= 1.3x the dense one.
"""

import pathlib
import time

from absl import flags
from ml_collections import config_flags

from jaxsae import cli
from jaxsae.bench import lm_step, throughput, throughput_report
from jaxsae.models import pretrained
from jaxsae.text import corpus as corpus_lib
from jaxsae.text import model_corpus
from jaxsae.text.tokenizer import load_tokenizer

_LM_CONFIG = str(pathlib.Path(__file__).parent.parent / "configs" / "lm_sparse.py")
_SPARSE = config_flags.DEFINE_config_file(
  "sparse_config", f"{_LM_CONFIG}:sparse", "The weight-sparse LM config.", lock_config=True
)
_DENSE = config_flags.DEFINE_config_file(
  "dense_config", f"{_LM_CONFIG}:dense", "Its dense twin (same shape).", lock_config=True
)
_PARTS = flags.DEFINE_list("parts", ["harvest", "store", "lm"], "What to measure.")
_MODEL = flags.DEFINE_string("model", "default", "Model to harvest from (a name or a folder).")
_HOOK = flags.DEFINE_string("hook", "blocks.1.resid_post", "The single harvested hook.")
_WINDOWS = flags.DEFINE_integer("windows", 256, "Windows harvested (a multiple of --batch_size).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "Tokens per harvested window.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Windows per harvest forward.")
_DTYPE = flags.DEFINE_enum(
  "store_dtype", "float32", ["float32", "bfloat16", "int8"], "Store dtype."
)
_CHUNK = flags.DEFINE_integer("chunk_rows", 8192, "Rows per store chunk.")
_STORE_ROWS = flags.DEFINE_integer("store_rows", 131072, "Rows of the store that is read.")
_READ_BATCH = flags.DEFINE_integer("read_batch", 4096, "Rows per shuffled batch.")
_LM_BATCH = flags.DEFINE_integer("lm_batch", 0, "LM sequences per step (0: the config's).")
_LM_INIT = flags.DEFINE_enum(
  "lm_init", "pretrained", ["pretrained", "random"],
  "Start from the shipped sparse/dense models (realistic activations) or random init.",
)  # fmt: skip
_STEP_FRACTION = flags.DEFINE_float("step_fraction", 0.75, "Train-step counter / total steps.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats per measurement (median).")
_OUT = flags.DEFINE_string("out", None, "Directory for throughput.json and throughput.md.")
flags.mark_flag_as_required("out")


def _lm_part(log) -> dict:
  configs = {"sparse": _SPARSE.value, "dense": _DENSE.value}
  params, labels = {}, {}
  if _LM_INIT.value == "pretrained":
    for name, config in configs.items():
      lm = pretrained.load(name)
      if lm.config == lm_step.model_of(config).config:
        params[name], labels[name] = lm.params, f"pretrained:{name}"
      else:
        log(f"the shipped {name!r} model's shape differs from its config; random init")
  config = configs["sparse"]
  batch = _LM_BATCH.value or config.train.batch_size
  tokenizer = load_tokenizer(config.data.tokenizer)
  corpus = corpus_lib.from_config(config.data)  # The config being trained: its own splits.
  tokens = throughput.corpus_windows(corpus, tokenizer, config.data.seq_len, batch)
  result = lm_step.compare(
    configs, tokens, params=params, step_fraction=_STEP_FRACTION.value, repeats=_REPEATS.value
  )
  for row in result["rows"]:
    row["params"] = labels.get(row["variant"], "random")
  return result


def main(argv):
  del argv
  start = time.time()
  report = {
    "date": time.strftime("%Y-%m-%d %H:%M"),
    "machine": throughput_report.machine_info(),
    "settings": {
      "model": _MODEL.value,
      "hook": _HOOK.value,
      "windows": _WINDOWS.value,
      "seq_len": _SEQ_LEN.value,
      "batch_size": _BATCH.value,
      "store_dtype": _DTYPE.value,
      "chunk_rows": _CHUNK.value,
      "repeats": _REPEATS.value,
    },
  }
  if "harvest" in _PARTS.value or "store" in _PARTS.value:
    lm = pretrained.load(_MODEL.value)
  if "harvest" in _PARTS.value:
    corpus = model_corpus.for_model(lm)  # Split as the model was trained.
    windows = throughput.corpus_windows(corpus, lm.tokenizer, _SEQ_LEN.value, _WINDOWS.value)
    windows = windows[:, :-1]
    every_block = [f"blocks.{i}.resid_post" for i in range(lm.config.n_layers)]
    report["harvest"] = throughput.harvest_paths(
      lm,
      windows,
      {_HOOK.value: [_HOOK.value], "every resid_post": every_block},
      batch_size=_BATCH.value,
      chunk_rows=_CHUNK.value,
      dtype=_DTYPE.value,
      repeats=_REPEATS.value,
    )
    print(f"harvest done ({time.time() - start:.0f} s)")
  if "store" in _PARTS.value:
    report["store"] = throughput.store_throughput(
      _STORE_ROWS.value,
      lm.config.d_model,
      chunk_rows=_CHUNK.value,
      dtype=_DTYPE.value,
      batch_size=_READ_BATCH.value,
      repeats=_REPEATS.value,
    )
    print(f"store reads done ({time.time() - start:.0f} s)")
  if "lm" in _PARTS.value:
    report["lm_step"] = _lm_part(print)
    print(f"LM steps done ({time.time() - start:.0f} s)")
  paths = throughput_report.write(report, _OUT.value)
  print(throughput_report.markdown(report))
  print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
  cli.run(main)
