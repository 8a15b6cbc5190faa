"""Evaluate any SAE on a model's held-out text: metrics, spliced losses, probes, N2G, browser.

python -m experiments.evaluate --sae=default --workdir=runs/evaluate
python -m experiments.evaluate --sae=PATH_OR_ID --model=NAME_OR_PATH --hook=blocks.L.resid_post \
  --config.tokens=65536

Every field of jaxsae/evals/evaluate_any.py's base_config can be overridden. harvest.bos and
harvest.skip_first default to the model's own (BOS first and its position skipped for Gemma,
Llama and Mistral); e.g. --config.harvest.bos=False --config.harvest.skip_first=0 to turn it off.
"""

from jaxsae.evals.evaluate_any import base_config


def get_config():
  return base_config()
