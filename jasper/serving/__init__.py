"""Serving with Triton Inference Server: the model repository writer, the server wrapper, the
client, and the Python-backend model Triton runs (`triton_models/model.py`)."""
