"""Bridges between the shipped dense and weight-sparse models, and steering the dense model
through an interpretable channel of the sparse one (Gao et al. 2025, "Weight-sparse transformers
have interpretable circuits", §bridges).

python -m experiments.bridges --workdir=runs/bridges                    # default, ~10 min, 2 cores
python -m experiments.bridges --config=experiments/configs/bridges.py:quick --workdir=/tmp/b

Fields: `dense`, `sparse` (model names or folders for `pretrained.load`); `data` (corpus and
window length; the split is the one both models record, `model_corpus.split_fractions`);
`bridge` (the fields of `jaxsae.sparse.bridges.BridgeConfig`; `sites` is "all" or
comma-separated site names, `topk_fraction` unset means the sparse model's); `eval` (validation
windows for the per-term losses); `steering` (the task, its pairs per split, and the
random-channel controls per site). Any field can be overridden, e.g. --config.bridge.steps=50.
"""

import ml_collections
from ml_collections import config_dict


def get_config(size: str = "default"):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dense = "dense"
  c.sparse = "sparse"

  c.data = ml_collections.ConfigDict()
  # The corpus both models were trained on; its split is the one recorded with the models.
  c.data.corpus = "stdlib"
  c.data.pattern = "**/*.py"
  c.data.seq_len = 128  # Steering prompts are up to steering.max_len tokens: train that long.

  c.bridge = ml_collections.ConfigDict()
  c.bridge.sites = "all"
  c.bridge.topk_fraction = config_dict.placeholder(float)
  # Every step runs each model once clean and 2L+1 times from a bridged site (with gradients),
  # and AbsTopK's top_k dominates on CPU: ~1.5 s a step at 4 x 128 tokens on 2 cores.
  c.bridge.steps = 200
  c.bridge.batch_size = 4
  c.bridge.lr = 1e-3
  c.bridge.init = "lstsq"
  c.bridge.init_windows = 64
  c.bridge.log_every = 10

  c.eval = ml_collections.ConfigDict()
  c.eval.windows = 32
  c.eval.batch_size = 4

  c.steering = ml_collections.ConfigDict()
  c.steering.task = "closing_quote"
  c.steering.n_pairs = 128  # From train-split files to choose channels, validation to measure.
  c.steering.max_len = 128
  c.steering.n_controls = 4
  c.steering.sites = "all"  # Bridge sites to steer at ("all": every trained one).

  if size == "quick":  # Seconds: one site, a few steps, short windows; for tests.
    c.data.seq_len = 64
    c.bridge.sites = "blocks.3.resid_mid"
    c.bridge.steps = 3
    c.bridge.batch_size = 2
    c.bridge.init_windows = 4
    c.bridge.log_every = 1
    c.eval.windows = 2
    c.eval.batch_size = 2
    c.steering.n_pairs = 8
    c.steering.max_len = 64
    c.steering.n_controls = 1
  elif size != "default":
    raise ValueError(f"unknown bridges config size {size!r}; use 'default' or 'quick'")
  return c
