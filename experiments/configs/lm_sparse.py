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
"""

from jaxsae.lm.config import base_config


def get_config(variant: str = "sparse"):
  c = base_config()
  c.model.d_model = 128
  c.model.n_layers = 4
  c.model.n_heads = 8
  c.model.d_head = 16
  c.model.d_mlp = 512
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
  if variant == "sparse":
    c.sparsity.enabled = True
    c.sparsity.hidden_fraction = 1 / 16
    c.sparsity.embedding_fraction = 1 / 4
    c.model.activation_topk_fraction = 0.25
    c.optim.lr = 1.28e-2
  elif variant == "dense":
    c.optim.lr = 3e-3
  else:
    raise ValueError(f"unknown lm_sparse variant {variant!r}; use 'sparse' or 'dense'")
  return c
