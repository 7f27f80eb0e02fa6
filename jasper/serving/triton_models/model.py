"""Triton Python-backend model: one stage of the Jasper ensemble, run with ONNX Runtime.

`jasper triton-repo` copies this file into every Python-backend model of a repository; the
model's `component` parameter picks the stage (feature-extractor, acoustic-model or decoder). It
runs inside Triton's Python backend stub, in the server's own environment (numpy < 2, onnxruntime),
so it imports nothing from `jasper`.

Triton's dynamic batcher hands `execute` several requests at once, each with its own batch and
time sizes. They are zero-padded into one batch along the time axis, run in one ONNX Runtime call
and split back; the lengths that travel with every tensor keep the padding out of the results.
A request that fails validation gets an error response of its own and the rest are still served.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# component -> (inputs, outputs, padded axis of each input in the request tensors (batch first))
STAGES = {
    "feature-extractor": (("audio", "num_samples"), ("features", "feature_lengths"), (1, None)),
    "acoustic-model": (("features", "feature_lengths"), ("log_probs", "output_lengths"), (2, None)),
    "decoder": (("log_probs", "output_lengths"), ("transcript",), (1, None)),
}


class RequestError(ValueError):
    """A request that cannot be served; the message goes back to the client."""


def pad_concat(arrays: list[np.ndarray], axis: int | None) -> np.ndarray:
    """Concatenate along the batch axis, zero-padding `axis` to the longest."""
    if axis is None:
        return np.concatenate(arrays)
    size = max(a.shape[axis] for a in arrays)
    padded = []
    for a in arrays:
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, size - a.shape[axis])
        padded.append(np.pad(a, widths))
    return np.concatenate(padded)


def collapse(ids: np.ndarray, blank: int) -> list[int]:
    """Greedy CTC: drop repeats, then blanks."""
    if ids.size == 0:
        return []
    keep = np.ones(ids.shape, dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    return [int(i) for i in ids[keep] if i != blank]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        self.component = params["component"]
        self.inputs, self.outputs, self.pad_axes = STAGES[self.component]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        path = Path(args["model_repository"]) / args["model_version"] / params["onnx_file"]
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.onnx_outputs = [o.name for o in self.session.get_outputs()]
        self.min_samples = int(params.get("min_samples", "1"))
        self.max_samples = int(params.get("max_samples", "0"))
        self.labels = json.loads(params.get("labels", "[]"))

    def validate(self, tensors: list[np.ndarray]) -> None:
        """Checks Triton cannot do from the config: lengths must fit their tensors."""
        data, lengths = tensors
        lengths = lengths.reshape(-1)
        if lengths.shape[0] != data.shape[0]:
            raise RequestError(
                f"{self.inputs[1]} has {lengths.shape[0]} entries for a batch of {data.shape[0]}"
            )
        time_size = data.shape[self.pad_axes[0]]
        if self.component == "feature-extractor":
            if self.max_samples and time_size > self.max_samples:
                raise RequestError(
                    f"audio of {time_size} samples is longer than this server's maximum of {self.max_samples}"
                )
            if lengths.size and lengths.min() < self.min_samples:
                raise RequestError(
                    f"audio of {int(lengths.min())} samples is shorter than the minimum of "
                    f"{self.min_samples} (empty audio, or NUM_SAMPLES too small)"
                )
            if not np.isfinite(data).all():
                raise RequestError("audio contains NaN or infinity")
        if lengths.size and (lengths.min() < 0 or lengths.max() > time_size):
            raise RequestError(f"{self.inputs[1]} must lie in [0, {time_size}], got {lengths.tolist()}")

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        batch: list[tuple[int, list[np.ndarray]]] = []
        for i, request in enumerate(requests):
            tensors = [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs]
            try:
                self.validate(tensors)
            except RequestError as e:
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(str(e))
                )
                continue
            batch.append((i, tensors))
        if batch:
            try:
                results = self.run([tensors for _, tensors in batch])
            except Exception as e:  # any runtime failure becomes each request's error, not a crash
                error = pb_utils.TritonError(f"{self.component} failed: {type(e).__name__}: {e}")
                for i, _ in batch:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
            else:
                for (i, _), outputs in zip(batch, results, strict=True):
                    responses[i] = pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor(n, o) for n, o in zip(self.outputs, outputs, strict=True)
                        ]
                    )
        return responses

    def run(self, per_request: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        """One ONNX Runtime call for all requests; outputs split back per request."""
        sizes = [tensors[0].shape[0] for tensors in per_request]
        feeds = {}
        for k, name in enumerate(self.inputs):
            parts = [tensors[k] for tensors in per_request]
            if k == 1:  # lengths travel as [batch, 1] in Triton and as [batch] in the graph
                parts = [p.reshape(-1) for p in parts]
            feeds[name] = pad_concat(parts, self.pad_axes[k])
        outputs = self.session.run(self.onnx_outputs, feeds)
        if self.component == "decoder":
            (ids,) = outputs
            lengths = feeds[self.inputs[1]]
            text = [self.text(row[: int(n)]) for row, n in zip(ids, lengths, strict=True)]
            outputs = [np.array(text, dtype=object).reshape(-1, 1)]
        else:
            outputs = [outputs[0], outputs[1].reshape(-1, 1)]
        bounds = np.cumsum([0, *sizes])
        return [[o[a:b] for o in outputs] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def text(self, ids: np.ndarray) -> bytes:
        blank = len(self.labels)
        return "".join(self.labels[i] for i in collapse(ids, blank)).encode()
