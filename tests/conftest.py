"""Shared test helpers: where `../shared` (fixtures, real LibriSpeech clips, sentences) lives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# JASPER_SHARED points elsewhere where `../shared` cannot sit beside the clone (a GPU machine's copy).
SHARED = Path(os.environ.get("JASPER_SHARED") or REPO.parent / "shared")


def require_shared(*parts: str) -> Path:
    """Return a path under ../shared, or skip the test with a reason naming the missing path."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared fixtures are laid out beside the clone in CI")
    return path


def mini_manifest(root: Path, out: Path | None = None, limit: int | None = None) -> list[dict]:
    """NeMo JSON-lines entries for the real mini LibriSpeech set, in LibriSpeech order; written to
    `out` when given. `jasper.data.load_utterances` reads this format."""
    import soundfile as sf

    entries = []
    for trans in sorted(root.glob("*/*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            uid, text = line.split(" ", 1)
            flac = trans.parent / f"{uid}.flac"
            entries.append(
                {
                    "audio_filepath": str(flac.relative_to(root)),
                    "duration": sf.info(str(flac)).duration,
                    "text": text,
                }
            )
    entries = entries[:limit]
    if out is not None:
        write_manifest(out, entries)
    return entries


def shortest_mini_rows() -> tuple[Path, list[dict]]:
    """The real mini LibriSpeech directory and its manifest entries, shortest clip first: training
    tests take the first few so that a CPU gets through them in seconds. Skips without ../shared."""
    root = require_shared("data", "librispeech-real-mini")
    return root, sorted(mini_manifest(root), key=lambda r: r["duration"])


def write_manifest(path: Path, rows: list[dict]) -> str:
    """Write NeMo JSON-lines `rows` to `path`; return the path as a string for command lines."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def impossible_clip(root: Path, rows: list[dict], tmp: Path) -> dict:
    """A 0.3 s cut of the shortest clip with a transcript far too long for its CTC frames: its loss is
    infinite, and training must skip it rather than crash or learn NaNs."""
    import soundfile as sf

    audio, rate = sf.read(str(root / rows[0]["audio_filepath"]))
    clip = tmp / "clip.flac"
    sf.write(str(clip), audio[int(0.8 * rate) : int(1.1 * rate)], rate)
    return {"audio_filepath": str(clip), "duration": 0.3, "text": "far too many letters " * 10}
