"""Jasper: convolutional CTC speech recognition, compatible with NVIDIA's reference configs and checkpoints."""

__version__ = "0.1.0"
