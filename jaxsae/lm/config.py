"""The schema of a language-model training config, with every field's meaning, and its checks.

Experiment configs (`experiments/configs/lm_*.py`) start from `base_config()` and change
fields; `validate` rejects unknown keys (with a close-match suggestion) and bad values, all at
once, before any compute.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from jaxsae import config_check, nonfinite, sharding
from jaxsae.models.config import TransformerConfig
from jaxsae.sparse.projection import SparsityConfig
from jaxsae.text import corpus as corpus_lib


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Parameter init and data order.

  # The transformer; fields as in jaxsae.models.config.TransformerConfig.
  c.model = ml_collections.ConfigDict()
  c.model.vocab_size = config_dict.placeholder(int)  # None: the tokenizer's vocabulary size.
  c.model.d_model = 128
  c.model.n_layers = 4
  c.model.n_heads = 4
  c.model.d_head = 32
  c.model.d_mlp = 512
  c.model.max_len = config_dict.placeholder(int)  # None: data.seq_len.
  c.model.norm = "layernorm"  # "layernorm" | "rmsnorm"
  c.model.norm_eps = 1e-5
  c.model.positions = "learned"  # "learned" | "none"
  c.model.attention_sink = False
  c.model.bigram_table = False
  # AbsTopK at the eight sites of each layer (weight-sparse models): fraction kept; 0 is off.
  c.model.activation_topk_fraction = 0.0
  c.model.activation = "gelu"  # "gelu" (tanh approx.) | "gelu_exact" | "relu"
  c.model.tied_embeddings = True
  c.model.use_bias = True
  c.model.dtype = "float32"  # Matmul dtype: "float32" | "bfloat16" | "float16".
  c.model.init_std = 0.02

  c.data = ml_collections.ConfigDict()
  # "stdlib", a directory, a file, or a glob of text files; or a dataset: .jsonl, .json,
  # .parquet or .arrow files (one, a glob, a folder of them), a datasets.save_to_disk folder,
  # or "hf:owner/name[:config]", streamed from the Hugging Face Hub (jaxsae.text.hf_datasets).
  c.data.corpus = "stdlib"
  c.data.pattern = "**/*.py"  # Files searched for under a directory corpus.
  # Share of files (datasets: of rows, by id hash) held out for validation.
  c.data.validation_fraction = corpus_lib.VALIDATION_FRACTION
  c.data.test_fraction = corpus_lib.TEST_FRACTION  # Share held out for the final test figure.
  # The fields below apply to datasets only; their rows are documents.
  c.data.split = "train"  # The dataset's own split read (then split again by id hash).
  c.data.text_column = "text"  # The column of document text.
  # A column of token ids, packed as they are without the tokenizer ("": tokenize text_column);
  # every id must be below the model's vocab_size.
  c.data.input_ids_column = ""
  c.data.id_column = ""  # The column whose value is hashed to pick a row's split ("": row index).
  c.data.max_documents = 0  # Read only the first rows, in stream order (0: all; Hub streams).
  c.data.tokenizer = "bytes"  # "bytes", or "bpe:/path/to/tokenizer.json".
  c.data.seq_len = 256  # Tokens per training sequence.

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000  # Optimizer steps.
  c.train.batch_size = 32  # Global sequences per step; divisible by the data axis.
  c.train.log_every = 20  # Steps between train-metric records.
  c.train.eval_every = 200  # Steps between validation evaluations (0: only at the end).
  c.train.eval_sequences = 256  # Validation sequences per evaluation.
  c.train.checkpoint_every = 200  # Steps between checkpoints.
  c.train.keep_checkpoints = 2  # Checkpoints kept on disk.
  c.train.async_checkpoints = True  # Write checkpoints in the background.
  # NaN/Inf in a step's loss or gradients: "stop" raises, naming the step, batch and last good
  # checkpoint; "skip" leaves parameters and optimizer state unchanged for the batch, counts it.
  c.train.on_nonfinite = "stop"

  # AdamW with linear warmup, cosine decay and global-norm clipping.
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 3e-3  # Peak learning rate.
  c.optim.warmup_steps = 100
  c.optim.final_lr_fraction = 0.1  # Cosine decays to lr * this.
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.1  # Decoupled; matrices only (not norms, biases or the sink).
  c.optim.clip_norm = 1.0  # Global gradient-norm clip (0: none).

  # Weight sparsity (Gao et al. 2025): top-k magnitude projection after every step, annealed from
  # dense; the optimizer becomes the paper's (global-RMS-normalized Adam, eps 0.1, sharkfin lr,
  # decay after projection) with optim.lr as its base lr and optim.weight_decay as its decay.
  c.sparsity = ml_collections.ConfigDict()
  c.sparsity.enabled = False
  c.sparsity.hidden_fraction = 1 / 64  # Kept share of every attention and MLP matrix.
  c.sparsity.embedding_fraction = 1 / 16  # Kept share of the embedding and unembedding.
  c.sparsity.min_per_neuron = 4  # Nonzeros always kept per neuron slice.
  c.sparsity.anneal_start = 0.01  # Share of training before annealing starts (dense before).
  c.sparsity.anneal_end = 0.5  # Share of training at which the targets are reached.
  c.sparsity.warmup = 0.01  # Share of training the sparse optimizer's lr warms up over.

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # Devices on the data axis; -1: all that `model` leaves.
  c.mesh.model = 1  # Devices on the model axis.
  c.mesh.distributed = False  # Call jax.distributed.initialize() (multi-host pods, SLURM).
  return c


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> TransformerConfig:
  """The TransformerConfig of an LM config, given the tokenizer's vocabulary size."""
  values = config.model.to_dict()
  values["vocab_size"] = values["vocab_size"] or vocab_size
  values["max_len"] = values["max_len"] or config.data.seq_len
  return TransformerConfig.from_dict(values)


def sparsity_config(s: ml_collections.ConfigDict) -> SparsityConfig:
  """The SparsityConfig of an LM config's `sparsity` section (ConfigError when invalid)."""
  return SparsityConfig(
    hidden_fraction=float(s.hidden_fraction),
    embedding_fraction=float(s.embedding_fraction),
    min_per_neuron=int(s.min_per_neuron),
    anneal_start=float(s.anneal_start),
    anneal_end=float(s.anneal_end),
  )


def _check_values(c: ml_collections.ConfigDict, p: list[str]) -> None:
  req = config_check.require
  req(c.data.seq_len >= 2, p, f"data.seq_len={c.data.seq_len} is below 2; use 2 or more")
  for name in ("steps", "batch_size", "log_every", "eval_sequences", "checkpoint_every"):
    value = c.train[name]
    req(value >= 1, p, f"train.{name}={value} must be at least 1")
  req(c.train.eval_every >= 0, p, f"train.eval_every={c.train.eval_every} must be >= 0")
  req(c.train.keep_checkpoints >= 1, p, "train.keep_checkpoints must be at least 1")
  config_check.require_choice(c.train.on_nonfinite, nonfinite.CHOICES, "train.on_nonfinite", p)
  req(c.optim.lr > 0, p, f"optim.lr={c.optim.lr} must be positive")
  req(c.optim.warmup_steps >= 0, p, "optim.warmup_steps must be >= 0")
  req(0 <= c.optim.final_lr_fraction <= 1, p, "optim.final_lr_fraction must be in [0, 1]")
  req(0 <= c.optim.b1 < 1 and 0 <= c.optim.b2 < 1, p, "optim.b1 and optim.b2 must be in [0, 1)")
  req(c.optim.clip_norm >= 0, p, "optim.clip_norm must be >= 0 (0 disables clipping)")
  for name in ("validation_fraction", "test_fraction"):
    req(0 < c.data[name] < 0.5, p, f"data.{name}={c.data[name]} must be in (0, 0.5)")
  req(c.data.max_documents >= 0, p, "data.max_documents must be >= 0 (0: all rows)")
  max_len = c.model.max_len
  req(
    max_len is None or c.model.positions == "none" or max_len >= c.data.seq_len,
    p,
    f"model.max_len={max_len} is shorter than data.seq_len={c.data.seq_len}; raise max_len",
  )
  if c.sparsity.enabled:
    try:
      sparsity_config(c.sparsity)
    except ValueError as e:
      p.extend(getattr(e, "problems", [str(e)]))
  model = dict(c.model.to_dict(), vocab_size=c.model.vocab_size or 1, max_len=max_len or 1)
  try:
    TransformerConfig.from_dict(model)
  except ValueError as e:
    p.extend(getattr(e, "problems", [str(e)]))


def validate(config: ml_collections.ConfigDict, n_devices: int | None = None) -> None:
  """Raise one ConfigError listing every problem of `config`, the batch's split over
  `n_devices` included."""

  def check_devices(c, p):
    if n_devices is not None:
      problem = sharding.divisibility_problem(
        c.train.batch_size, c.mesh.data, n_devices, c.mesh.model
      )
      if problem:
        p.append(f"train.batch_size: {problem}")

  config_check.validate(config, base_config(), [_check_values, check_devices])
