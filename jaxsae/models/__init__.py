"""Models: the GPT-style transformer, its hook points, pretrained weights, sampling and
transformer-circuits analysis."""
