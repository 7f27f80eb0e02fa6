"""Jasper: convolutional CTC speech recognition, compatible with NVIDIA's configs and checkpoints."""

__version__ = "0.1.0"
