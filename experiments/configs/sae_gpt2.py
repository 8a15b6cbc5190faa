"""TopK SAE on GPT-2 small's residual stream, as in the TopK paper (Gao et al. 2024, "Scaling and
evaluating sparse autoencoders"): layer 8 of 12 (resid_post), 64-token contexts, n = 32768, k = 32.

python -m experiments.main --config=experiments/configs/sae_gpt2.py --workdir=runs/sae_gpt2

jaxsae never downloads. First put the Hugging Face checkpoint in $JAXSAE_MODELS/gpt2 (default
~/jaxsae_models/gpt2): config.json, model.safetensors, vocab.json and merges.txt from the repo
openai-community/gpt2, e.g. on a machine with internet

  huggingface-cli download openai-community/gpt2 config.json model.safetensors vocab.json \\
    merges.txt --local-dir ~/jaxsae_models/gpt2

then copy the folder over; or point at another folder with JAXSAE_MODELS=DIR (holding gpt2/) or
--config.harvest.model=FOLDER. Without the files the job stops before any compute and says so.

Position 0 of every window is left out of the training and held-out activations (its residual
norm in GPT-2 is tens of times the others' and would dominate the input normalization); ΔCE
splices the SAE everywhere else (position 0 keeps its own activation, as separators do). The text is the standard-library corpus (as for the shipped model; --config.harvest.corpus=DIR
for other text). Up to 131072 training windows of 64 tokens (about the whole train split in
GPT-2 tokens) make up to 8.4M activations, stored as bfloat16 (~13 GB at d = 768); 8192 steps of
4096 tokens (34M) read each about four times.
"""

from jaxsae.main_job import base_config


def get_config():
  c = base_config("topk")
  c.harvest.model = "gpt2"
  c.harvest.hook = "blocks.8.resid_post"
  c.harvest.seq_len = 64
  c.harvest.skip_first = 1  # Position 0's residual norm is tens of times the rest (attention sink).
  c.harvest.train_windows = 131072
  c.harvest.eval_windows = 256
  c.harvest.batch_size = 64
  c.harvest.dtype = "bfloat16"
  c.sae.n_latents = 32768
  c.sae.k = 32
  c.train.steps = 8192
  c.train.batch_size = 4096
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.dead_window_tokens = 10_000_000  # The TopK paper's dead-latent window.
  c.optim.warmup_steps = 200
  return c
