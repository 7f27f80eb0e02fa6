"""Timing: latency summaries with true percentiles, and host timers that see the device's work.

Shared by the inference benchmark (`jasper benchmark`) and `jasper infer`'s latency log, which
report the same statistics; a library layer so that neither tool imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

PERCENTILES = (90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one timed region, in milliseconds: true percentiles and the arithmetic mean."""

    n: int
    mean: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def from_ms(cls, values_ms: Sequence[float]) -> LatencyStats:
        if not values_ms:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan)
        p = percentiles(values_ms)
        return cls(len(values_ms), float(np.mean(values_ms)), p[90], p[95], p[99])


def percentiles(values: Sequence[float], qs: Sequence[float] = PERCENTILES) -> dict[float, float]:
    """`{q: value}` for each percentile q, with numpy's default linear interpolation."""
    if len(values) == 0:
        raise ValueError("percentiles of an empty sequence")
    out = np.percentile(np.asarray(values, dtype=np.float64), list(qs))
    return {q: float(v) for q, v in zip(qs, out, strict=True)}


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a host timer measures what the device did."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
