"""The embedded default: a byte-level GPT on the Python standard library, shipped with jaxsae.

Reproduce the shipped model (about 80 minutes on 2 CPU cores), then export it:

  python -m experiments.train_lm --config=experiments/configs/lm_default.py --workdir=runs/lm_default
  python -m experiments.export_lm --workdir=runs/lm_default --out=jaxsae/pretrained/stdlib_bytes

0.86M parameters (3.4 MB in float32): 4 layers, d_model 128, 4 heads of 32, d_mlp 512,
LayerNorm, learned positions, tied embeddings, context 256 bytes.
"""

from jaxsae.lm.config import base_config


def get_config():
  c = base_config()
  c.model.d_model = 128
  c.model.n_layers = 4
  c.model.n_heads = 4
  c.model.d_head = 32
  c.model.d_mlp = 512
  c.data.seq_len = 256
  c.train.steps = 4000
  c.train.batch_size = 32
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.eval_sequences = 512
  c.train.checkpoint_every = 500
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 200
  return c
