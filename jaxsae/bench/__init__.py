"""Speed benchmarks: our SAE training step against its floor and against SAELens, same process."""
