"""Sparse autoencoders: the architectures, their losses, and the sharded trainer."""
