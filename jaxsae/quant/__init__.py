"""Activation outliers, SmoothQuant and W8A8 fake quantization of our transformers."""
