"""The activation-function ablation study: every SAE architecture on the same stored activations.

  python -m experiments.ablation                         # default grid (≈30 min on 2 cores)
  python -m experiments.ablation --config=experiments/configs/ablation.py:quick --workdir=runs/q

Resumes the harvest and the training from the workdir. Writes RESULTS.md (the TopK paper's
findings checked on our model, with numbers), results.csv/.md, interpretability.csv, probes.csv,
recovery.csv, figures/*.png and browser/<family>/index.html.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from jaxsae import cli
from jaxsae.ablation import findings, report, study

_DEFAULT = str(pathlib.Path(__file__).parent / "configs" / "ablation.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT, "Ablation config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/ablation", "Directory for stores, runs, results.")
_PUBLISH = flags.DEFINE_string(
  "publish", None, "Also copy RESULTS.md, the tables and figures here (e.g. docs/ablation)."
)


def main(argv):
  del argv
  result = study.run(_CONFIG.value, _WORKDIR.value)
  print(findings.markdown(result.findings))
  print(f"\nwrote {_WORKDIR.value}/RESULTS.md with {len(result.figures)} figures")
  if _PUBLISH.value:
    report.publish(_WORKDIR.value, _PUBLISH.value)
    print(f"copied the results page, tables and figures to {_PUBLISH.value}")


if __name__ == "__main__":
  cli.run(main)
