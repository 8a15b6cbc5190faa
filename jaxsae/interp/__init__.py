"""Interpreting SAE latents: sparse codes, activating contexts, N2G explanations, a browser."""
