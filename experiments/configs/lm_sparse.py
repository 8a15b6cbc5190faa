"""A weight-sparse byte-level GPT on the standard library (Gao et al. 2025), and its dense
baseline of the same shape: the circuits paper's architecture at our small scale.

  python -m experiments.train_lm --config=experiments/configs/lm_sparse.py --workdir=runs/lm_sparse
  python -m experiments.train_lm --config=experiments/configs/lm_sparse.py:dense \
      --workdir=runs/lm_dense

Both: 4 layers, d_model 128, 8 heads of 16, d_mlp 512, RMSNorm, untied embeddings without
biases, a dense bigram table and an attention sink, context 256. The sparse model keeps 1/16 of
every attention and MLP matrix and 1/4 of the embeddings (annealed from dense over the first half
of training, at least 4 nonzeros per neuron), AbsTopK keeps 1/4 of each activation at the eight
sites, and trains with the paper's optimizer (base lr 1.28e-2). The dense baseline trains with
AdamW at 3e-3, no activation sparsity.

The other variants span the capability-interpretability frontier (hidden fractions 1/4, 1/8,
1/32; a twice-wider model at 1/64 with the same hidden nonzeros as `sparse`) and give dense
models of smaller width (d_model 64, 32) so circuits can be compared at matched pretraining loss.
"""

from jaxsae.lm.config import base_config

# Each variant: (d_model, hidden fraction or None for dense). d_head 16, d_mlp 4·d_model.
VARIANTS = {
  "sparse": (128, 1 / 16),
  "sparse_h4": (128, 1 / 4),
  "sparse_h8": (128, 1 / 8),
  "sparse_h32": (128, 1 / 32),
  "sparse_wide": (256, 1 / 64),  # Same hidden nonzeros as `sparse`, twice the width.
  "dense": (128, None),
  "dense_d64": (64, None),
  "dense_d32": (32, None),
  "dense_d16": (16, None),
}


def get_config(variant: str = "sparse"):
  if variant not in VARIANTS:
    raise ValueError(f"unknown lm_sparse variant {variant!r}; use one of {sorted(VARIANTS)}")
  d_model, hidden_fraction = VARIANTS[variant]
  c = base_config()
  c.model.d_model = d_model
  c.model.n_layers = 4
  c.model.n_heads = d_model // 16
  c.model.d_head = 16
  c.model.d_mlp = 4 * d_model
  c.model.norm = "rmsnorm"
  c.model.tied_embeddings = False
  c.model.use_bias = False
  c.model.bigram_table = True
  c.model.attention_sink = True
  c.data.seq_len = 256
  c.train.steps = 4000
  c.train.batch_size = 32
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.eval_sequences = 512
  c.train.checkpoint_every = 500
  c.optim.warmup_steps = 200
  if hidden_fraction is not None:
    c.sparsity.enabled = True
    c.sparsity.hidden_fraction = hidden_fraction
    c.sparsity.embedding_fraction = 1 / 4
    c.model.activation_topk_fraction = 0.25
    c.optim.lr = 1.28e-2
  else:
    c.optim.lr = 3e-3
  return c
