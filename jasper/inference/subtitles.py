"""Subtitles and tables from word times: cues split at pauses, SRT, WebVTT and TSV.

Why cues are cut here and not by a fixed window: a subtitle should start and end with speech, hold
what a reader takes in at a glance, and never run across a long pause. A CTC model's word times are
frame-accurate and absolute (they never drift over an hour, unlike a decoder that predicts
timestamps), so the cues need only grouping rules:

* a pause of `pause` seconds (1 s) or more between two words always ends a cue;
* a cue holds at most `lines` lines (2) of at most `max_line_chars` characters (42, the line length
  broadcasters' subtitle guidelines use) and lasts at most `max_cue_seconds` (6 s);
* a single word longer than that, or longer than a line, is a cue of its own;
* in an alphabet without a space label (NeMo's Chinese QuartzNet) every character is a word and
  they are joined without spaces.

SRT is written with the PyPI `srt` package; WebVTT is SRT's cue list with `.` in the times and a
header, written here. TSV is whisper's layout (start and end in integer milliseconds, text) with a
confidence column.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

MAX_LINE_CHARS = 42
LINES = 2
MAX_CUE_SECONDS = 6.0
PAUSE_SECONDS = 1.0


class TimedWord(Protocol):
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str  # lines joined by "\n"


def _lines(words: Sequence[str], joiner: str, max_line_chars: int) -> str:
    if not joiner:  # no spaces to wrap at: cut by characters
        text = "".join(words)
        return "\n".join(text[i : i + max_line_chars] for i in range(0, len(text), max_line_chars))
    return "\n".join(textwrap.wrap(joiner.join(words), max_line_chars, break_long_words=False))


def cues(
    words: Sequence[TimedWord],
    max_line_chars: int = MAX_LINE_CHARS,
    max_cue_seconds: float = MAX_CUE_SECONDS,
    pause: float = PAUSE_SECONDS,
    lines: int = LINES,
    joiner: str = " ",
) -> list[Cue]:
    """Group timed words into cues by the rules of the module docstring, in order."""
    out: list[Cue] = []
    group: list[TimedWord] = []

    def fits(word: TimedWord) -> bool:
        if word.start - group[-1].end >= pause or word.end - group[0].start > max_cue_seconds:
            return False
        text = _lines([w.word for w in [*group, word]], joiner, max_line_chars).split("\n")
        return len(text) <= lines and max(map(len, text)) <= max_line_chars  # a longer word: its own cue

    def close() -> None:
        text = _lines([w.word for w in group], joiner, max_line_chars)
        out.append(Cue(group[0].start, group[-1].end, text))

    for word in words:
        if group and not fits(word):
            close()
            group = []
        group.append(word)
    if group:
        close()
    return out


def to_srt(cue_list: Sequence[Cue]) -> str:
    import srt

    return srt.compose(
        [
            srt.Subtitle(i, timedelta(seconds=c.start), timedelta(seconds=c.end), c.text)
            for i, c in enumerate(cue_list, 1)
        ],
        reindex=False,
    )


def _vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def to_vtt(cue_list: Sequence[Cue]) -> str:
    blocks = [f"{_vtt_time(c.start)} --> {_vtt_time(c.end)}\n{c.text}" for c in cue_list]
    return "WEBVTT\n\n" + "".join(b + "\n\n" for b in blocks)


def to_tsv(words: Sequence[TimedWord]) -> str:
    """One row per word: start and end in milliseconds, the word, its confidence (when known)."""
    rows = ["start\tend\ttext\tconfidence"]
    for w in words:
        confidence = getattr(w, "confidence", None)
        shown = "" if confidence is None else f"{confidence:.3f}"
        rows.append(f"{round(w.start * 1000)}\t{round(w.end * 1000)}\t{w.word}\t{shown}")
    return "\n".join(rows) + "\n"
