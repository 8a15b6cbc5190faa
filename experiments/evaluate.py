"""Evaluate any dictionary: a jaxsae, SAELens or sparsify SAE (a folder or an id) on a model.

  python -m experiments.evaluate                                  # the shipped SAE and model
  python -m experiments.evaluate --sae=runs/main/sae_saelens --workdir=runs/eval_saelens
  python -m experiments.evaluate --sae=PATH_OR_ID --model=gemma-3-270m --hook=blocks.9.resid_post \
    --config.tokens=8192
  python -m experiments.evaluate --sae=hf:OWNER/REPO/PATH --model=... --config.harvest.bos=False

For models whose tokenizer adds BOS (Gemma, Llama, Mistral) every window begins with it and its
position is skipped (harvest.bos=True, harvest.skip_first=1) unless those fields are set.

Held-out L0, FVU, dead fraction and firing density; ΔCE, CE recovered and KL with the SAE
spliced in at the hook; N2G scores, and the probe loss on Python source; beside the main job's
same-L0 baselines. Writes <workdir>/results.{md,csv,jsonl}, density.csv, probes.csv and
browser/index.html (jaxsae.evals.evaluate_any).
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from jaxsae import cli, tables
from jaxsae.evals import evaluate_any

_DEFAULT = str(pathlib.Path(__file__).parent / "configs" / "evaluate.py")
_CONFIG = config_flags.DEFINE_config_file(
  "config", _DEFAULT, "Evaluation config.", lock_config=True
)
_SAE = flags.DEFINE_string("sae", None, "SAE folder or id (config.sae; default: default).")
_MODEL = flags.DEFINE_string("model", None, "Model name or path (config.harvest.model).")
_HOOK = flags.DEFINE_string("hook", None, "Hook the SAE reads (default: the one it records).")
_CORPUS = flags.DEFINE_string("corpus", None, "Text: stdlib, a directory, file or glob.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/evaluate", "Directory for the store and results.")


def main(argv):
  del argv
  c = _CONFIG.value
  for flag, section, key in (
    (_SAE, c, "sae"),
    (_MODEL, c.harvest, "model"),
    (_HOOK, c.harvest, "hook"),
    (_CORPUS, c.harvest, "corpus"),
  ):
    if flag.value is not None:  # A flag given wins over the config's field.
      section[key] = flag.value
  rows = evaluate_any.run(c, _WORKDIR.value)
  print(tables.markdown(rows, evaluate_any.COLUMNS))
  browser = rows[0].get("browser")
  print(
    f"\nwrote {_WORKDIR.value}/results.md, .csv, .jsonl"
    + (f"; browser: {browser}" if browser else "")
  )


if __name__ == "__main__":
  cli.run(main)
