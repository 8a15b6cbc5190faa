"""Text: tokenizers, corpus discovery and splits, and grain pipelines of packed sequences."""
