"""gan-bench: an experiment-tracking benchmark suite for GAN training techniques."""

__version__ = "0.1.0"
