"""Activation outliers and SmoothQuant W8A8 on the shipped models (jaxsae.quant.study).

python -m experiments.smoothquant --workdir=runs/smoothquant
python -m experiments.smoothquant --config.models=default,~/jaxsae_models/gpt2 --config.seq_len=128

Any GPT-2-family folder (`save_pretrained` or Hub layout, safetensors) can be named in models.
"""

from jaxsae.quant.study import base_config


def get_config():
  return base_config()
