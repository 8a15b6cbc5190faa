"""The activation-function ablation study: every architecture on the same stored activations."""
