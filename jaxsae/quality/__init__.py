"""SAE quality against the peers (sparsify, SAELens) on identical activations and budget."""
