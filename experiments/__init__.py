"""Runnable experiment files: thin layers over the jaxsae library (run with `python -m`)."""
