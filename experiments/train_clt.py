"""A cross-layer transcoder of every MLP of a model, trained streamed (jaxsae.clt_job).

  python -m experiments.train_clt --workdir=runs/clt          # the shipped model, all 4 layers
  python -m experiments.train_clt --config.clt.features_per_layer=1024 --config.train.steps=3000

Writes <workdir>/clt (circuit-tracer's CLT files), results.md and results.json: per-layer FVU
and L0 on held-out windows, the replacement model's CE, ΔCE and KL, and the attribution
graphs of `clt.prompts` (size, kept nodes and edges, replacement and completeness scores). A
sweep (`--config.sweep.k=16,48`, or variants: `jaxsae.clt_job`) trains several from the same
forward passes and writes each to <workdir>/<name>.
"""

import json
import pathlib

from absl import flags
from ml_collections import config_flags

from jaxsae import cli, clt_job

_DEFAULT = str(pathlib.Path(__file__).parent / "configs" / "clt.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT, "CLT job config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/clt", "Directory for checkpoints and results.")
_SUMMARY = ("ce_original", "ce_replacement", "train_s", "eval_s")


def main(argv):
  del argv
  for name, out in clt_job.run(_CONFIG.value, _WORKDIR.value).items():
    # Each dictionary's files (clt/ or transcoders/) sit beside its results.md.
    print((pathlib.Path(out["dictionaries"]).parent / "results.md").read_text())
    print(json.dumps({"dictionary": name, **{k: out[k] for k in _SUMMARY}}))


if __name__ == "__main__":
  cli.run(main)
