"""Speech-activity segmentation: where a recording has speech, so long files are cut at silences.

Why: a fixed 30 s chunk can cut a word in two, and silence costs as much to recognise as speech.
Cutting at pauses and skipping long silences avoids both; word times stay absolute (each region's
times are offset by where it starts).

Two detectors give per-frame speech probabilities, and one rule turns them into regions:
  silero  the Silero VAD v5 ONNX model (MIT) that the PyPI package `silero-vad` ships inside its
          wheel, run through ONNX Runtime: 32 ms windows of 512 samples at 16 kHz, each with the 64
          samples before it and the recurrent state. Needs `pip install -e '.[vad]'`.
  energy  frame energy (10 ms hop, 25 ms window) against the recording's own level: a frame is
          speech when it is within `ENERGY_RANGE_DB` of the loud end (the 95th percentile) and
          above an absolute floor. No dependencies; fooled by loud noise.
Regions: speech starts when the probability reaches `threshold`, ends after `min_silence` seconds
below `threshold - 0.15`; regions shorter than `min_speech` are dropped, each is padded by `pad`
seconds, and neighbours closer than `2 * pad` are merged. Regions longer than `max_region` are left
for the chunked recogniser (`pipeline.log_probs`) to window, as any long recording is.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
SILERO_WINDOW = 512
SILERO_CONTEXT = 64
ENERGY_HOP = 160
ENERGY_WINDOW = 400
ENERGY_RANGE_DB = 35.0
ENERGY_FLOOR_DB = -60.0
METHODS = ("none", "energy", "silero")
INSTALL_HINT = "pip install -e '.[vad]' (the silero-vad package ships its ONNX model)"


@dataclass(frozen=True)
class Options:
    threshold: float = 0.5
    min_silence: float = 0.3
    min_speech: float = 0.25
    pad: float = 0.2


def silero_missing() -> str | None:
    """Why `--vad silero` cannot run here, or None."""
    for module, package in (("silero_vad", "silero-vad"), ("onnxruntime", "onnxruntime")):
        if importlib.util.find_spec(module) is None:
            return f"--vad silero needs {package}: {INSTALL_HINT}"
    return None


@functools.cache
def _silero_session():  # noqa: ANN202  (an onnxruntime.InferenceSession)
    import onnxruntime
    import silero_vad

    model = Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])


def silero_probabilities(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """Speech probability per 32 ms window of 16 kHz `audio`, and the window in seconds."""
    session = _silero_session()
    n = len(audio) // SILERO_WINDOW
    padded = np.concatenate(
        [np.zeros(SILERO_CONTEXT, np.float32), audio[: n * SILERO_WINDOW].astype(np.float32)]
    )
    state = np.zeros((2, 1, 128), np.float32)
    sr = np.array(SAMPLE_RATE, dtype=np.int64)
    probs = np.empty(n, np.float32)
    for i in range(n):
        window = padded[i * SILERO_WINDOW : (i + 1) * SILERO_WINDOW + SILERO_CONTEXT][None]
        out, state = session.run(None, {"input": window, "state": state, "sr": sr})
        probs[i] = out[0, 0]
    return probs, SILERO_WINDOW / SAMPLE_RATE


def energy_probabilities(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """1.0 for frames within ENERGY_RANGE_DB of the recording's loud end (and above the floor), else 0."""
    if len(audio) < ENERGY_WINDOW:
        return np.zeros(0, np.float32), ENERGY_HOP / SAMPLE_RATE
    frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float32), ENERGY_WINDOW)[::ENERGY_HOP]
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.percentile(db, 95)
    speech = (db > loud - ENERGY_RANGE_DB) & (db > ENERGY_FLOOR_DB)
    return speech.astype(np.float32), ENERGY_HOP / SAMPLE_RATE


def regions_from_probabilities(
    probs: np.ndarray, frame_seconds: float, duration: float, options: Options = Options()
) -> list[tuple[float, float]]:
    """Speech regions (start, end) in seconds from per-frame probabilities (module docstring)."""
    regions: list[list[float]] = []
    start, quiet_since = None, None
    low = options.threshold - 0.15
    for i, p in enumerate(probs):
        t = i * frame_seconds
        if start is None:
            if p >= options.threshold:
                start, quiet_since = t, None
        elif p < low:
            quiet_since = t if quiet_since is None else quiet_since
            if t + frame_seconds - quiet_since >= options.min_silence:
                regions.append([start, quiet_since])
                start = None
        else:
            quiet_since = None
    if start is not None:
        regions.append([start, len(probs) * frame_seconds])
    merged: list[list[float]] = []
    for a, b in regions:
        if b - a < options.min_speech:
            continue
        a, b = max(0.0, a - options.pad), min(duration, b + options.pad)
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def speech_regions(audio: np.ndarray, method: str, options: Options = Options()) -> list[tuple[float, float]]:
    """Speech regions of 16 kHz `audio` by `method` ("none": the whole recording)."""
    duration = len(audio) / SAMPLE_RATE
    if method == "none":
        return [(0.0, duration)] if len(audio) else []
    if method == "silero":
        missing = silero_missing()
        if missing:
            raise RuntimeError(missing)
        probs, step = silero_probabilities(audio)
    elif method == "energy":
        probs, step = energy_probabilities(audio)
    else:
        raise ValueError(f"unknown VAD method {method!r}; expected one of {METHODS}")
    return regions_from_probabilities(probs, step, duration, options)
