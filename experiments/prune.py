"""Prune models to the smallest circuit per task, with nonsense controls; tables and figures.

  python -m experiments.prune --workdir=runs/prune
  python -m experiments.prune --config=experiments/configs/prune.py:frontier \
      --config.model_dir=runs/models --workdir=runs/prune          # more models, same workdir
  python -m experiments.prune --workdir=runs/prune --report_only   # tables from what is there

Writes circuits/<model>/<task>.json (a rerun skips those present), results.csv, tasks.csv,
edge_ratio_*.csv, frontier.csv, figures/frontier.png, views/<model>_<task>.html/.json (the
circuits named in config.views, drawn with their nodes' top contexts) and RESULTS.md.
"""

import pathlib
import shutil

from absl import flags
from ml_collections import config_flags

from jaxsae import cli
from jaxsae.sparse import report, study

_DEFAULT = str(pathlib.Path(__file__).parent / "configs" / "prune.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT, "Pruning config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/prune", "Directory for circuits and results.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the tables and figures.")
_PUBLISH = flags.DEFINE_string(
  "publish", None, "Also copy RESULTS.md, tables, figures, circuits and views here (docs/...)."
)
_PUBLISHED = ("RESULTS.md", "*.csv", "figures", "views/*.html")


def main(argv):
  del argv
  config = _CONFIG.value
  if not _REPORT_ONLY.value:
    study.run(config, _WORKDIR.value)
  print(report.write(_WORKDIR.value, [tuple(p) for p in config.matched]))
  for path in study.write_views(config, _WORKDIR.value):
    print(f"wrote {path}")
  if _PUBLISH.value:
    publish(config, pathlib.Path(_WORKDIR.value), pathlib.Path(_PUBLISH.value))


def publish(config, workdir: pathlib.Path, out: pathlib.Path) -> None:
  """Copy the results page, tables, figures and view pages, and the circuits of
  config.published_circuits (with their controls); the rest stay in the workdir."""
  for pattern in _PUBLISHED:
    for path in workdir.glob(pattern):
      target = out / path.relative_to(workdir)
      target.parent.mkdir(parents=True, exist_ok=True)
      if path.is_dir():
        shutil.copytree(path, target, dirs_exist_ok=True)
      else:
        shutil.copy2(path, target)
  for spec in study.split_names(config.published_circuits):
    for name in (spec, spec + "_nonsense"):
      path = workdir / "circuits" / f"{name}.json"
      if path.exists():
        (out / "circuits" / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / "circuits" / path.parent.name / path.name)
  print(f"published to {out}")


if __name__ == "__main__":
  cli.run(main)
