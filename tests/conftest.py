"""Shared test helpers: where `../shared` (fixtures, real LibriSpeech clips, sentences) lives."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def require_shared(*parts: str) -> Path:
    """Return a path under ../shared, or skip the test with a reason naming the missing path."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared fixtures are laid out beside the clone in CI")
    return path
