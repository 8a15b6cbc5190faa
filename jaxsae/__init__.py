"""jaxsae: sparse autoencoders and weight-sparse transformers in JAX/Flax.

The library is organised by job, one subpackage each (README, "Architecture", has every module):
  text/         tokenizers, corpus discovery and splits, grain input pipelines
  models/       the transformer, its hook points and positions, pretrained weights and other
                formats, sampling, QK/OV circuits
  lm/           language-model training and evaluation
  activations/  harvesting activations into a store (zarr3, int8), reading shuffled batches back
  sae/          the SAE and transcoder architectures, their sharded trainer, export, the zoo of
                published dictionaries
  evals/        SAE evaluations inside the model (ΔCE, probes, latent ablation, the transcoder
                replacement model) and baselines
  interp/       latents' contexts, N2G explanations, a feature browser, steering with a latent
  sparse/       weight-sparse transformers: projection, optimizer, circuit tasks, pruning,
                circuit views, dense-sparse bridges
  ablation/     the activation-function study;  quality/  SAE quality against the peers
  quant/        activation outliers, SmoothQuant, W8A8 fake quantization
  bench/        speed and memory benchmarks
  testing/      the kill -9 harness of the fault tests and the soak
  pretrained/   shipped weights (no code): the byte model, the sparse model and its dense twins,
                the TopK SAE
and, shared by every trainer: sharding (meshes and logical axes), checkpoint (Orbax), train_state,
run_log (progress bar, JSONL and TensorBoard), nonfinite (NaN/Inf steps), preemption (SIGTERM),
config_check (validation before compute), errors (messages that name the fix), saved and
format_tags (saved files: checks, durable writes, one format tag per kind), topk_mask (exact
top-k masks), tables, cli. The end-to-end jobs: main_job, gemma3_study and gemma3_report.
"""

__version__ = "0.1.0"
