"""Shared test helpers: where `../shared` (fixtures, real LibriSpeech clips, sentences) lives."""

from __future__ import annotations

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
    import json

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
        out.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return entries
