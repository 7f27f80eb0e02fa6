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
from typing import Any, Protocol

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


class CueBuilder:
    """Cues from words given one at a time (`--stream`): `add` returns the cues a word closes."""

    def __init__(
        self,
        max_line_chars: int = MAX_LINE_CHARS,
        max_cue_seconds: float = MAX_CUE_SECONDS,
        pause: float = PAUSE_SECONDS,
        lines: int = LINES,
        joiner: str = " ",
    ) -> None:
        self.max_line_chars, self.max_cue_seconds, self.pause = max_line_chars, max_cue_seconds, pause
        self.lines, self.joiner = lines, joiner
        self.group: list[TimedWord] = []

    def _text(self, words: Sequence[TimedWord]) -> str:
        return _lines([w.word for w in words], self.joiner, self.max_line_chars)

    def _fits(self, word: TimedWord) -> bool:
        group = self.group
        if word.start - group[-1].end >= self.pause or word.end - group[0].start > self.max_cue_seconds:
            return False
        text = self._text([*group, word]).split("\n")
        return len(text) <= self.lines and max(map(len, text)) <= self.max_line_chars  # else: its own cue

    def add(self, word: TimedWord) -> list[Cue]:
        closed = self.finish() if self.group and not self._fits(word) else []
        self.group.append(word)
        return closed

    def finish(self) -> list[Cue]:
        """The open cue, closed (none when no word is waiting)."""
        if not self.group:
            return []
        cue = Cue(self.group[0].start, self.group[-1].end, self._text(self.group))
        self.group = []
        return [cue]


def cues(words: Sequence[TimedWord], **options: Any) -> list[Cue]:
    """Group timed words into cues by the rules of the module docstring, in order (`CueBuilder`'s
    options: max_line_chars, max_cue_seconds, pause, lines, joiner)."""
    builder = CueBuilder(**options)
    out = [cue for word in words for cue in builder.add(word)]
    return out + builder.finish()


def to_srt(cue_list: Sequence[Cue], first_index: int = 1) -> str:
    import srt

    return srt.compose(
        [
            srt.Subtitle(i, timedelta(seconds=c.start), timedelta(seconds=c.end), c.text)
            for i, c in enumerate(cue_list, first_index)
        ],
        reindex=False,
    )


def _vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def to_vtt(cue_list: Sequence[Cue], header: bool = True) -> str:
    blocks = [f"{_vtt_time(c.start)} --> {_vtt_time(c.end)}\n{c.text}" for c in cue_list]
    return ("WEBVTT\n\n" if header else "") + "".join(b + "\n\n" for b in blocks)


TSV_HEADER = "start\tend\ttext\tconfidence"


def to_tsv(words: Sequence[TimedWord], header: bool = True) -> str:
    """One row per word: start and end in milliseconds, the word, its confidence (when known)."""
    rows = [TSV_HEADER] if header else []
    for w in words:
        confidence = getattr(w, "confidence", None)
        shown = "" if confidence is None else f"{confidence:.3f}"
        rows.append(f"{round(w.start * 1000)}\t{round(w.end * 1000)}\t{w.word}\t{shown}")
    return "\n".join(rows) + "\n"
