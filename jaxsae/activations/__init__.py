"""Activations of a language model on disk: harvest into a store, read shuffled batches back."""
