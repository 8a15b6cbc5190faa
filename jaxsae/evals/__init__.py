"""Evaluations of SAEs inside the language model and against simple baselines."""
