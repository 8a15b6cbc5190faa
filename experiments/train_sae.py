"""Train sparse autoencoders (one, or a whole sweep in one pass) and evaluate them.

  python -m experiments.train_sae --config=experiments/configs/sae_synthetic.py --workdir=runs/syn
  # override any field: --config.sae.k=16 --config.sweep.seed='(0,1,2)' --config.mesh.model=8

The data is `data.source` (synthetic known features, or an .npy array). On language-model
activations, use the main job (`python -m experiments.main --config=experiments/configs/sae_<arch>.py`).

Resumes from the workdir's latest checkpoint. Prints a table of held-out L0, FVU and dead
fraction per SAE (and, on synthetic data, the share of true features recovered), and leaves
the exported SAEs in <workdir>/saes/.
"""

from absl import flags
from ml_collections import config_flags

from jaxsae import cli, tables
from jaxsae.sae import experiment

_CONFIG = config_flags.DEFINE_config_file("config", lock_config=True, help_string="SAE config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and SAEs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  rows = experiment.run(_CONFIG.value, _WORKDIR.value)
  columns = [c for c in experiment.COLUMNS if any(c in r for r in rows)]
  print(tables.markdown(rows, columns))


if __name__ == "__main__":
  cli.run(main)
