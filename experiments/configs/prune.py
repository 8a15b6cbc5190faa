"""Pruning weight-sparse and dense models to minimal task circuits (Gao et al. 2025).

python -m experiments.prune --workdir=runs/prune                       # shipped sparse vs dense
python -m experiments.prune --config=experiments/configs/prune.py:quick --workdir=/tmp/q

`default` prunes the shipped weight-sparse model and its dense twin stopped at the same test loss
("dense_matched") on every task of the suite, each beside its nonsense control. `frontier` adds
the models of experiments/configs/lm_sparse.py (train them, export each to
<model_dir>/<variant>, pass --config.model_dir) on the tasks they solve.
"""

import ml_collections

from jaxsae.sparse.task_suite import TASK_NAMES

PAPER_TASKS = ("closing_quote", "bracket_depth", "variable_type")


def get_config(variant: str = "default"):
  c = ml_collections.ConfigDict()
  c.corpus = "stdlib"
  c.models = "sparse,dense_matched"  # Shipped names, folders, or folder names under model_dir.
  c.model_dir = ""
  c.tasks = ",".join(PAPER_TASKS + tuple(t for t in TASK_NAMES if t not in PAPER_TASKS))
  c.controls = True  # Prune each task's nonsense control too.
  c.matched = (("sparse", "dense_matched"),)  # (sparse, dense) pairs at matched loss.
  c.n_train_pairs = 128  # From training-split files: the masks are fitted on these.
  c.n_heldout_pairs = 64  # From validation-split files: sufficiency and necessity.
  c.max_len = 96  # Longest prompt, in tokens.
  c.seed = 0
  c.mean_windows = 64  # Training-split windows for the node means (mean ablation).
  c.mean_seq_len = 256
  # Circuits drawn as views/<model>_<task>.html and .json, with top contexts per node.
  c.views = ",".join(f"sparse/{t}" for t in PAPER_TASKS) + ",dense_matched/closing_quote"
  c.view_windows = 128  # Validation windows searched for each node's top contexts.
  c.view_contexts = 3  # Contexts shown per node.
  # Circuits (with their controls) that --publish copies beside the tables.
  c.published_circuits = ",".join(
    f"{m}/{t}" for m in ("sparse", "dense_matched") for t in PAPER_TASKS
  )
  c.deadline_s = 0  # Stop starting new (model, task) runs after this many seconds (0: never).
  c.prune = ml_collections.ConfigDict()
  c.prune.steps = 600
  c.prune.batch_pairs = 16
  c.prune.lr = 1e-2
  c.prune.weight_decay = 0.0
  c.prune.penalty = 1e-4
  c.prune.init = 0.1
  c.prune.temperature = 1.0
  c.prune.target_loss = 0.15
  c.prune.freeze_norm = False
  c.prune.eval_batch = 64
  c.prune.seed = 0
  if variant == "frontier":
    c.models = ",".join(
      ["sparse_h4", "sparse_h8", "sparse_h32", "sparse_wide", "dense", "dense_d64", "dense_d32"]
      + ["dense_d16"]
    )
    c.tasks = "closing_quote,closing_bracket_type,header_colon"
    c.controls = False
    c.views = ""
    c.published_circuits = ""
  elif variant == "quick":  # A minute on 2 cores: one task and its control, few steps.
    c.models = "sparse"
    c.tasks = "closing_quote"
    c.n_train_pairs = 32
    c.n_heldout_pairs = 16
    c.max_len = 48
    c.mean_windows = 8
    c.mean_seq_len = 64
    c.prune.steps = 30
    c.prune.lr = 3e-2
    c.prune.target_loss = 0.5
    c.matched = ()
    c.views = "sparse/closing_quote"
    c.published_circuits = "sparse/closing_quote"
    c.view_windows = 8
  elif variant != "default":
    raise ValueError(f"unknown prune config {variant!r}; use 'default', 'frontier' or 'quick'")
  return c
