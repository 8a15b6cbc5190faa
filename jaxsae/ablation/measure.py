"""Measurements of one trained SAE for the study, each a thin call into `evals` / `interp`.

Every function takes the SAE as trained: `config`, `variables` on the scaled-input convention
and the input scale c (the SAE sees c·x), and raw activations or token windows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsae.evals import downstream, latent_ablation, metrics, probe_tasks, probes, refine
from jaxsae.sae import evaluate, registry
from jaxsae.sae.config import SAEConfig
from jaxsae.text import model_corpus

# Families whose pre-activations rank latents the way their activation does, so TopK(k′) and a
# global threshold on `Encoding.pre` are the same SAE read at another sparsity. Gated (gate and
# magnitude paths) and ProLU (a bias-gated product) have no such single ranking.
RECOVERABLE = ("topk", "batchtopk", "relu", "jumprelu")


def encoder(config: SAEConfig, scale: float, variables):
  """raw x (B, D) -> latents (B, n), numpy."""
  fn = evaluate.encode_decode(config, scale)
  return lambda x: np.asarray(fn(variables, np.asarray(x, np.float32))[0])


def reconstruction_and_downstream(
  lm, held_out, eval_windows, hook, reference, config, variables, scale
) -> dict:
  """L0, FVU, MSE, shrinkage γ, dead-on-held-out; ΔCE, CE recovered (zero, mean), KL score."""
  fn = evaluate.encode_decode(config, scale)
  row = evaluate.metrics_of(fn, variables, held_out)
  row["dead_held_out"] = row.pop("dead_fraction")
  spliced = downstream.splice_losses(
    lm, eval_windows, hook, lambda v, x: fn(v, x)[1], variables, reference
  )
  keys = ("delta_ce", "ce_recovered", "ce_recovered_mean", "kl_score", "ce_spliced")
  return {**row, **{k: spliced[k] for k in keys}}


def progressive_recovery(config, variables, scale, x_raw_NxD, l0: float, multiples) -> list[dict]:
  """TopK(k′) and a global threshold on the pre-activations at L0 targets `multiples`·L0."""
  sae = registry.build(config)
  x = np.asarray(x_raw_NxD, np.float32) * scale
  pre = np.asarray(sae.apply(variables, x, method="encode").pre, np.float32)
  n = pre.shape[1]
  ks = sorted({int(min(n, max(1, round(m * l0)))) for m in multiples})
  # The threshold whose mean count of pre > t over these rows is k′ (a quantile of pre).
  thresholds = [float(np.quantile(pre, 1.0 - k / n)) for k in ks]
  rows = metrics.progressive_recovery(
    pre, x, lambda z: sae.apply(variables, z, method="decode"), ks, thresholds
  )
  for row in rows:
    row["target_l0"] = (
      row["value"] if row["activation"] == "topk" else ks[thresholds.index(row["value"])]
    )
  return rows


def activation_shrinkage(config, variables, scale, x_raw_NxD, steps: int) -> dict:
  """Projected-gradient refinement of the latents, support fixed and free (see evals.refine)."""
  sae = registry.build(config)
  x = np.asarray(x_raw_NxD, np.float32) * scale
  z = np.asarray(sae.apply(variables, x, method="encode").latents, np.float32)
  params = variables["params"]
  out = {}
  for support in ("fixed", "free"):
    report = refine.shrinkage_report(z, x, params["W_dec"], params["b_dec"], support, steps)
    for key in ("activation_growth", "fvu_before", "fvu_after", "l0_after"):
      out[f"refine_{support}_{key}"] = float(report[key])
  return out


def ablation_sparsity(lm, tokens_BxT, hook, config, variables, scale, n_latents, seed) -> dict:
  out = latent_ablation.ablation_sparsity_of_latents(
    lm, tokens_BxT, hook, config, variables, scale, max_latents=n_latents, seed=seed
  )
  return {"ablation_effective": out["effective"], "ablation_fraction": out["fraction"]}


@dataclasses.dataclass
class ProbeData:
  """Raw activations at the hook and task labels of labelled held-out windows, split by window
  (first half fits the probes, second half scores them)."""

  x_train: np.ndarray
  labels_train: np.ndarray
  x_test: np.ndarray
  labels_test: np.ndarray
  tasks: tuple[str, ...]

  @property
  def n_tokens(self) -> int:
    return len(self.x_train) + len(self.x_test)


def probe_dataset(config, lm) -> ProbeData:
  """Label validation-split documents with `tokenize`/`ast` tasks and capture the hook on them."""
  h = config.harvest
  corpus = model_corpus.for_model(lm, h)
  labelled = probe_tasks.labelled_documents(
    corpus.read("validation"), lm.tokenizer, h.seq_len, config.evals.probe_windows, config.seed
  )
  acts = []
  for i in range(0, len(labelled.windows), h.batch_size):
    _, captured = lm.run(labelled.windows[i : i + h.batch_size], capture=[h.hook])
    acts.append(np.asarray(captured[h.hook], np.float32))
  acts_WxTxD = np.concatenate(acts)
  half = len(acts_WxTxD) // 2
  valid = labelled.valid
  return ProbeData(
    acts_WxTxD[:half][valid[:half]],
    labelled.labels[:half][valid[:half]],
    acts_WxTxD[half:][valid[half:]],
    labelled.labels[half:][valid[half:]],
    tuple(labelled.tasks),
  )


def probe_report(config, variables, scale, data: ProbeData) -> probes.ProbeReport:
  """Best 1-D probe per task over the SAE's latents (TopK paper's probe loss)."""
  encode = encoder(config, scale, variables)
  return probes.fit_probes(
    encode(data.x_train), data.labels_train, encode(data.x_test), data.labels_test, data.tasks
  )


def probe_neurons(data: ProbeData) -> probes.ProbeReport:
  """The same probes on the raw activation coordinates (the model's own basis), for scale."""
  return probes.fit_probes(
    data.x_train, data.labels_train, data.x_test, data.labels_test, data.tasks
  )
