"""The main job (README, first command): language model → activation store → SAE → table.

  python -m experiments.main                       # TopK on the shipped model, runs/main
  python -m experiments.main --config=experiments/configs/main.py:jumprelu --workdir=runs/j

Resumes the harvest and the training from the workdir. Prints held-out L0, FVU, dead fraction
and ΔCE for the SAE beside same-L0 baselines (PCA truncation, a random TopK dictionary).
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from jaxsae import cli, main_job, tables

_DEFAULT = str(pathlib.Path(__file__).parent / "configs" / "main.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT, "Main-job config.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
  "workdir", "runs/main", "Directory for stores, checkpoints, results."
)


def main(argv):
  del argv
  rows = main_job.run(_CONFIG.value, _WORKDIR.value)
  print(tables.markdown(rows, main_job.COLUMNS))
  print(f"\nwrote {_WORKDIR.value}/results.md; the SAE is in {_WORKDIR.value}/sae/")


if __name__ == "__main__":
  cli.run(main)
