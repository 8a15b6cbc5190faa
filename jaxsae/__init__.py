"""jaxsae: sparse autoencoders and weight-sparse transformers in JAX/Flax.

The library is organised by job (see README, "Architecture"):
  text/     tokenizers, corpus discovery and splits, grain input pipelines
  models/   the transformer, its hook points, pretrained weights, sampling, circuit analysis
  lm/       language-model training and evaluation
and, shared by every trainer: sharding (meshes and logical axes), checkpoint (Orbax),
run_log (progress bar, JSONL and TensorBoard), config_check (validation before compute).
"""

__version__ = "0.1.0"
