"""Language-model training and evaluation."""
