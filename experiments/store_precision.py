"""Training-store precision: what a bfloat16 or an int8 activation store costs the SAE.

  python -m experiments.store_precision --workdir=runs/store_precision
  python -m experiments.store_precision --config.main.train.steps=300 --workdir=/tmp/sp

Runs the main job once per training-store dtype (float32, bfloat16, int8 with per-chunk,
per-channel scales) in <workdir>/<dtype>, same seed and windows; the held-out store is float32
in every run (jaxsae.evals.store_precision). Writes <workdir>/store_precision.md, .csv and .png.
Each job resumes from its workdir.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from jaxsae import cli, tables
from jaxsae.evals import store_precision

_DEFAULT = str(pathlib.Path(__file__).parent / "configs" / "store_precision.py")
_CONFIG = config_flags.DEFINE_config_file(
  "config", _DEFAULT, "Store-precision config.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/store_precision", "Directory for the runs.")


def main(argv):
  del argv
  workdir = pathlib.Path(_WORKDIR.value)
  rows = store_precision.run(_CONFIG.value, workdir)
  table = store_precision.markdown(rows)
  (workdir / "store_precision.md").write_text(table + "\n")
  tables.write_csv(workdir / "store_precision.csv", rows, list(store_precision.COLUMNS))
  store_precision.plot(rows, workdir / "store_precision.png")
  print(table)
  print(f"\nwrote {workdir}/store_precision.md, .csv and .png")


if __name__ == "__main__":
  cli.run(main)
