"""Export a trained LM workdir to a model folder (config.json + model.safetensors), with its
test-split loss beside unigram and bigram baselines.

  python -m experiments.export_lm --workdir=runs/lm_default --out=jaxsae/pretrained/stdlib_bytes
"""

from absl import flags

from jaxsae import cli, tables
from jaxsae.lm import export
from jaxsae.lm.report import report_rows

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir written by experiments.train_lm.")
_OUT = flags.DEFINE_string("out", None, "Folder to write the model to.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  metadata = export.export(_WORKDIR.value, _OUT.value, _STEP.value)
  report = metadata["test_report"]
  print(f"exported step {metadata['step']} to {_OUT.value}; test split, {report['tokens']} tokens:")
  print(tables.markdown(report_rows(report)))


if __name__ == "__main__":
  cli.run(main)
