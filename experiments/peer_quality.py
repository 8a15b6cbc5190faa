"""jaxsae's default TopK recipe against EleutherAI sparsify and SAELens on identical activations
and budget (jaxsae.quality.study): held-out FVU, ΔCE, L0 and dead fraction per trainer and seed.

  python -m experiments.peer_quality --workdir=runs/peer_quality --publish=docs/quality
  python -m experiments.peer_quality --workdir=runs/peer_quality --publish=docs/quality --report_only

Needs the peers (`pip install -e '.[peers]'`: a CPU torch, sae-lens, eai-sparsify). Resumes from
the workdir: finished runs are kept in <workdir>/results.jsonl. Writes results.md, results.csv
and figures/ there and, with --publish, RESULTS.md and its files there.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from jaxsae import cli
from jaxsae.quality import report, study

_DEFAULT = str(pathlib.Path(__file__).parent / "configs" / "peer_quality.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT, "Study config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/peer_quality", "Stores, runs and results.")
_PUBLISH = flags.DEFINE_string("publish", "", "Also write RESULTS.md and its files here.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the report from the workdir.")


def main(argv):
  del argv
  if not _REPORT_ONLY.value:
    study.run(_CONFIG.value, _WORKDIR.value)
  written = report.write(_WORKDIR.value, _PUBLISH.value or None)
  print((pathlib.Path(_WORKDIR.value) / "results.md").read_text(encoding="utf-8"))
  print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
  cli.run(main)
