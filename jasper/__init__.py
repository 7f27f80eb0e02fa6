"""Jasper: convolutional CTC speech recognition, compatible with NVIDIA's configs and checkpoints.

The speech pipeline is the top of the package (`audio`, `features`, `model`, `decoding`, `metrics`,
with `text`, `config`, `checkpoint` and `data`); the sub-packages `training`, `inference`,
`serving`, `lm`, `hub`, `datasets` and `quickstart` build on it. The names re-exported here from a
sub-package are imported on first use, so `import jasper` and `jasper --help` stay light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "pipeline"]


def __getattr__(name: str) -> Any:
    if name == "load_model":  # `jasper.load_model("stt_en_quartznet15x5").transcribe(["talk.wav"])`
        from jasper.inference.pipeline import load

        return load
    if name == "pipeline":  # `from jasper import pipeline; pipeline.load(ckpt).transcribe(paths)`
        from jasper.inference import pipeline

        return pipeline
    raise AttributeError(f"module 'jasper' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
