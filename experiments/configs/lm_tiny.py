"""A tiny language model for smoke tests and quick experiments (about a minute on 2 cores).

python -m experiments.train_lm --config=experiments/configs/lm_tiny.py --workdir=runs/lm_tiny
"""

from jaxsae.lm.config import base_config


def get_config():
  c = base_config()
  c.model.d_model = 32
  c.model.n_layers = 2
  c.model.n_heads = 2
  c.model.d_head = 16
  c.model.d_mlp = 64
  c.data.seq_len = 64
  c.train.steps = 100
  c.train.batch_size = 16
  c.train.log_every = 10
  c.train.eval_every = 50
  c.train.eval_sequences = 64
  c.train.checkpoint_every = 50
  c.optim.warmup_steps = 10
  return c
