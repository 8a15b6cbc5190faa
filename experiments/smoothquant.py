"""Per-channel activation statistics, outlier plots and naive vs smoothed W8A8 test loss.

  python -m experiments.smoothquant --workdir=runs/smoothquant
  python -m experiments.smoothquant --config.models=gpt2 --config.seq_len=128 --workdir=runs/sq_gpt2
  python -m experiments.smoothquant --workdir=runs/smoothquant --report_only   # tables, figures

Writes <workdir>/<model>/{outliers.md,outliers.csv,outliers.png,channel_stats.safetensors} and
<workdir>/{w8a8.md,w8a8.csv,w8a8.jsonl,w8a8_summary.md,w8a8.png}.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from jaxsae import cli
from jaxsae.quant import study

_DEFAULT = str(pathlib.Path(__file__).parent / "configs" / "smoothquant.py")
_CONFIG = config_flags.DEFINE_config_file(
  "config", _DEFAULT, "SmoothQuant study config.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/smoothquant", "Directory for tables and figures.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the tables and figures.")


def main(argv):
  del argv
  if _REPORT_ONLY.value:
    study.write_report(_WORKDIR.value)
  else:
    study.run(_CONFIG.value, _WORKDIR.value)
  print((pathlib.Path(_WORKDIR.value) / "w8a8_summary.md").read_text())
  print(f"\nwrote {_WORKDIR.value}/w8a8.md (every α), w8a8.png and per-model outlier tables")


if __name__ == "__main__":
  cli.run(main)
