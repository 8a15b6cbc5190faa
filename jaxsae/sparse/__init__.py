"""Weight-sparse transformers (Gao et al. 2025): projection, optimizer, tasks, pruning."""
