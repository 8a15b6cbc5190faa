"""The main job: evaluate the shipped language model on held-out standard-library code and
sample from it. (The SAE stages join this job as they land.)

  python -m experiments.quickstart --workdir=runs/quickstart

Prints the test-split loss beside unigram and bigram baselines and a sample; writes
report.json and report.md to the workdir.
"""

import json
import pathlib

from absl import flags

from jaxsae import cli, tables
from jaxsae.lm.report import report_rows, split_report
from jaxsae.models import pretrained
from jaxsae.text import model_corpus

_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Where the report is written.")
_MODEL = flags.DEFINE_string("model", "default", "A shipped model's name or a model folder.")
_MAX_SEQUENCES = flags.DEFINE_integer("max_sequences", None, "Test windows scored (default all).")
_PROMPT = flags.DEFINE_string("prompt", "import os\n\n\ndef ", "Prompt for the sample.")
_SAMPLE_TOKENS = flags.DEFINE_integer("sample_tokens", 300, "Tokens to sample.")


def main(argv):
  del argv
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  lm = pretrained.load(_MODEL.value)
  corpus = model_corpus.for_model(lm)
  print(
    f"model: {pretrained.resolve(_MODEL.value)} ({lm.config.n_layers} layers, d_model "
    f"{lm.config.d_model}); corpus: {corpus.root} ({len(corpus.files)} files)"
  )
  report = split_report(lm, corpus, "test", max_sequences=_MAX_SEQUENCES.value)
  table = tables.markdown(report_rows(report))
  sample = lm.generate(_PROMPT.value, _SAMPLE_TOKENS.value, temperature=0.8, seed=0)
  print(f"\ntest split, {report['tokens']} tokens:\n{table}\n")
  print(f"sample (temperature 0.8):\n{_PROMPT.value}{sample}\n")
  (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
  (workdir / "report.md").write_text(f"{table}\n\n```python\n{_PROMPT.value}{sample}\n```\n")
  print(f"wrote {workdir / 'report.md'}")


if __name__ == "__main__":
  cli.run(main)
