"""The main job: language model → activation store → SAE → evaluation against baselines.

On the shipped model and the standard-library corpus by default:
  1. harvest the hook's activations for a random subset of training windows, and for held-out
     (validation-split) windows, into two stores in the workdir (resumable; the training store
     in harvest.dtype, the held-out one always in float32);
  2. train the SAE (TopK by default) on the training store (resumable);
  3. evaluate it on the held-out store (L0, FVU, dead fraction) and by splicing its
     reconstruction into the model on held-out text (ΔCE, CE recovered), beside two same-L0
     baselines: PCA truncation and an untrained random TopK dictionary;
  4. print the table and write results.md / results.csv; export the SAE to <workdir>/sae/ and,
     in the SAELens format, to <workdir>/sae_saelens/.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import ml_collections
import numpy as np

from jaxsae import config_check, sharding, tables
from jaxsae.activations import harvest as harvest_lib
from jaxsae.activations.reader import StoreSource
from jaxsae.activations.streaming import StreamingSource
from jaxsae.evals import baselines, downstream
from jaxsae.models import hooks as hooks_lib
from jaxsae.models import pretrained
from jaxsae.sae import evaluate, export, row_sources, saelens, train_config
from jaxsae.sae import train as train_lib
from jaxsae.text import model_corpus, pipeline

COLUMNS = ("method", "l0", "fvu", "dead_fraction", "delta_ce", "ce_recovered")
STORE_DTYPES = ("float32", "bfloat16", "int8")  # harvest.dtype: the training store's.


def base_config(architecture: str = "topk") -> ml_collections.ConfigDict:
  c = train_config.base_config(architecture)
  c.harvest = ml_collections.ConfigDict()
  c.harvest.model = "default"  # "default" (the shipped model) or an exported model folder.
  c.harvest.hook = "blocks.1.resid_post"  # Where the SAE reads (and splices) activations.
  c.harvest.corpus = "stdlib"  # As data.corpus of the LM config.
  c.harvest.pattern = "**/*.py"
  # Datasets only, as the data.* fields of the same names in the LM config.
  c.harvest.split = "train"
  c.harvest.text_column = "text"
  c.harvest.input_ids_column = ""  # Token ids, checked against the model's vocabulary.
  c.harvest.id_column = ""
  c.harvest.max_documents = 0
  c.harvest.seq_len = 128  # Tokens per harvested window.
  c.harvest.train_windows = 4096  # Random training-split windows harvested (x seq_len rows).
  c.harvest.eval_windows = 128  # Validation-split windows for held-out metrics and ΔCE.
  c.harvest.batch_size = 32  # Windows per forward pass.
  c.harvest.chunk_rows = 8192  # Rows per store chunk (the unit of shuffled reading).
  # "float32" | "bfloat16" | "int8" (per-chunk, per-channel scales; jaxsae.activations.int8):
  # dtype of the training store; the held-out store is always float32.
  c.harvest.dtype = "float32"
  c.harvest.skip_separator = True  # Leave the start-of-document positions out.
  c.harvest.skip_first = 0  # Leave the first positions of every window out (GPT-2: 1).
  # Begin every window with the separator, the model's BOS (Gemma, Llama: trained with one);
  # seq_len counts it, so each window holds seq_len - 1 corpus tokens.
  c.harvest.bos = False
  c.harvest.streaming = False  # Train on activations computed on the fly (no training store).
  c.sae.n_latents = 1024  # 8 × d_model of the shipped model.
  c.sae.k = 16
  c.train.steps = 1500
  c.train.batch_size = 1024
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.train.dead_window_tokens = 1_000_000
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  h, p = config.harvest, []
  for name in ("seq_len", "train_windows", "eval_windows", "batch_size", "chunk_rows"):
    config_check.require(h[name] >= 1, p, f"harvest.{name}={h[name]} must be at least 1")
  config_check.require(h.max_documents >= 0, p, "harvest.max_documents must be >= 0 (0: all)")
  if h.bos:
    config_check.require(h.seq_len >= 3, p, f"harvest.seq_len={h.seq_len} must be ≥ 3 with bos")
  if h.seq_len >= 1:
    config_check.require(
      0 <= h.skip_first < h.seq_len,
      p,
      f"harvest.skip_first={h.skip_first} must be in [0, harvest.seq_len={h.seq_len})",
    )
  config_check.require_choice(h.dtype, STORE_DTYPES, "harvest.dtype", p)
  hook_problem = hooks_lib.name_problem(h.hook)
  if hook_problem:
    p.append(f"harvest.hook: {hook_problem}")
  try:
    train_config.validate(sae_part(config), n_devices=jax.device_count())
  except ValueError as e:
    p.extend(getattr(e, "problems", [str(e)]))
  if p:
    from jaxsae.errors import ConfigError

    raise ConfigError(p)


def sae_part(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The SAE training config inside a main-job config."""
  return ml_collections.ConfigDict({k: v for k, v in config.items() if k != "harvest"})


@dataclasses.dataclass
class Harvested:
  train: StoreSource | StreamingSource
  held_out: StoreSource
  eval_windows: np.ndarray  # (n, seq_len + 1) token windows for ΔCE.


def split_windows(config, lm) -> dict[str, np.ndarray]:
  """{"train", "validation"}: `harvest.train_windows` and `eval_windows` token windows (+1
  target each) sampled from the corpus split as the model was trained (held out stays out)."""
  h = config.harvest
  model_corpus.warn_if_other_corpus(lm, h)
  corpus = model_corpus.for_model(lm, h)
  splits = {}
  for split, count in (("train", h.train_windows), ("validation", h.eval_windows)):
    bos, vocab = h.get("bos", False), lm.config.vocab_size
    windows = pipeline.load_windows(corpus, split, lm.tokenizer, h.seq_len, bos, vocab)
    splits[split] = pipeline.sample_windows(windows, count, config.seed, split)
  return splits


def harvest_stores(config, lm, workdir: pathlib.Path) -> Harvested:
  h = config.harvest
  splits = split_windows(config, lm)
  stores = {}
  for split, windows in splits.items():
    if split == "train" and h.streaming:
      continue
    # The held-out store is small and held to exact activations (FVU is measured on it).
    stores[split] = harvest_lib.harvest(
      lm,
      windows[:, :-1],
      [h.hook],
      workdir / f"store_{split}",
      batch_size=h.batch_size,
      chunk_rows=h.chunk_rows,
      dtype=h.dtype if split == "train" else "float32",
      skip_separator=h.skip_separator,
      skip_first=h.skip_first,
      metadata={"model": str(h.model), "split": split, "corpus": str(h.corpus)},
    )
  if h.streaming:
    train = StreamingSource(
      lm,
      splits["train"][:, :-1],
      h.hook,
      skip_separator=h.skip_separator,
      skip_first=h.skip_first,
    )
  else:
    train = StoreSource(stores["train"], h.hook)
  return Harvested(
    train,
    StoreSource(stores["validation"], h.hook),
    splits["validation"],
  )


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Harvest, train, evaluate; returns the table's rows (SAE first, then the baselines)."""
  validate(config)
  # TransformerLens-style names (blocks.9.hook_resid_post) become ours before stores are named.
  config.harvest.hook = hooks_lib.canonical(config.harvest.hook)
  sharding.initialize_distributed(config.mesh.distributed)  # Before the model touches JAX.
  workdir = pathlib.Path(workdir)
  lm = pretrained.load(config.harvest.model)
  hooks_lib.Hooks.make([config.harvest.hook]).check(lm.hook_names())  # This model's layers.
  data = harvest_stores(config, lm, workdir)
  result = train_lib.train(sae_part(config), workdir, data.train)
  group = result.groups[0]
  sae_config = group.member_config(0)
  variables = result.member_variables(group.name, 0)
  export.save(workdir / "sae", sae_config, variables, result.scale, {"hook": config.harvest.hook})
  saelens.save(
    workdir / "sae_saelens",
    sae_config,
    variables,
    result.scale,
    {"hook_name": config.harvest.hook, "model_name": str(config.harvest.model)},
  )
  raw_config, raw_variables, _ = export.load(workdir / "sae")

  # Measured on the exported SAE, which acts on raw activations: the artifact users load.
  hook = config.harvest.hook
  skip_first = config.harvest.skip_first  # Positions the SAE never saw are left unedited.
  reference = downstream.reference_losses(lm, data.eval_windows, hook, skip_first)

  def measure(name, encode_decode, variables) -> dict:
    measured = downstream.held_out_and_spliced(
      lm, data.eval_windows, hook, encode_decode, variables, data.held_out, reference, skip_first
    )
    return {"method": name, **measured}

  rows = [
    measure(f"SAE ({sae_config.architecture})", evaluate.encode_decode(raw_config), raw_variables)
  ]
  k = sae_config.k if sae_config.architecture in ("topk", "batchtopk") else None
  l0 = k or max(1, round(rows[0]["l0"]))
  sample = row_sources.sample(data.train, config.data.normalization_samples, config.seed)
  pca = baselines.pca_variables(sample, l0)
  rows.append(measure(f"PCA top-{l0}", baselines.pca_encode_decode, pca))
  rand_config, rand_vars = baselines.random_topk(
    sae_config.d_in, sae_config.n_latents, l0, sample.mean(0), config.seed
  )
  rows.append(measure(f"random TopK-{l0}", evaluate.encode_decode(rand_config), rand_vars))
  if jax.process_index() == 0:
    (workdir / "results.md").write_text(tables.markdown(rows, COLUMNS) + "\n")
    tables.write_csv(workdir / "results.csv", rows, list(rows[0]))
  return rows
