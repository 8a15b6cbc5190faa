"""The replacement model of a language model and its transcoders (jaxsae.evals.replacement).

  python -m experiments.replacement --transcoders=SET_FOLDER --model=MODEL --workdir=runs/repl
  python -m experiments.replacement --transcoders=CLT_FOLDER_OR_ID --model=gemma-3-270m --bos
  python -m experiments.replacement --transcoders=LAYER0,LAYER1,... --model=MODEL

The dictionaries: a circuit-tracer per-layer set folder (every layer), a CLT (circuit-tracer or
Gemma Scope 2), or one per-layer transcoder per layer, paths or ids as `jaxsae.sae.zoo` reads
them. Every MLP output they name is replaced. The windows are validation-split windows of the
corpus the model records training on (`text.model_corpus`).

Prints and writes <workdir>/results.{md,csv,jsonl}: per layer, the dictionaries' FVU and L0 on
the original activations; the CE of the original and of the replacement model without error
terms, ΔCE and KL(p_original ‖ p_replacement).
"""

import json
import pathlib

from absl import flags

from jaxsae import cli, tables
from jaxsae.evals import replacement
from jaxsae.models import pretrained
from jaxsae.sae import zoo
from jaxsae.text import model_corpus, pipeline

_TRANSCODERS = flags.DEFINE_list("transcoders", None, "A set or CLT, or one transcoder per layer.")
_MODEL = flags.DEFINE_string("model", "default", "A model name or folder (pretrained.load).")
_WINDOWS = flags.DEFINE_integer("windows", 64, "Validation windows measured.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "Tokens per window.")
_BOS = flags.DEFINE_boolean("bos", False, "Begin each window with the model's BOS (Gemma, Llama).")
_SKIP_FIRST = flags.DEFINE_integer("skip_first", 0, "Leading positions not replaced (BOS: 1).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Windows per forward pass.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/replacement", "Where the results are written.")
flags.mark_flag_as_required("transcoders")


def main(argv):
  del argv
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  lm = pretrained.load(_MODEL.value)
  names = _TRANSCODERS.value
  dictionaries = zoo.load_replacement(names)
  corpus = model_corpus.for_model(lm)
  split = "validation"
  windows = pipeline.load_windows(
    corpus, split, lm.tokenizer, _SEQ_LEN.value, _BOS.value, lm.config.vocab_size
  )
  windows = pipeline.sample_windows(windows, _WINDOWS.value, 0, split)
  report = replacement.evaluate(
    lm, dictionaries, windows, skip_first=_SKIP_FIRST.value, batch_size=_BATCH.value
  )
  rows = report.rows()
  table = tables.markdown(rows)
  print(table)
  (workdir / "results.md").write_text(
    f"# Replacement model of {_MODEL.value}\n\nDictionaries: {', '.join(names)}; "
    f"{len(windows)} validation windows of {_SEQ_LEN.value} tokens.\n\n{table}\n"
  )
  tables.write_csv(workdir / "results.csv", rows)
  (workdir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  print(f"wrote {workdir / 'results.md'}")


if __name__ == "__main__":
  cli.run(main)
