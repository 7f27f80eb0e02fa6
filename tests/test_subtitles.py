"""Subtitles, TSV and word confidence: cue rules, SRT/VTT that parse, the CLI's formats."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import srt
import webvtt
from hypothesis import given
from hypothesis import strategies as st
from test_transcribe import mini, write_checkpoint  # noqa: F401  (the module fixture and its helper)

from jasper import config
from jasper.cli import main
from jasper.inference import subtitles
from jasper.inference.pipeline import Result, Word, word_timings
from jasper.text import Tokenizer

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def W(word: str, start: float, end: float) -> Word:  # noqa: N802
    return Word(word, start, end)


def test_a_pause_ends_a_cue_and_lines_and_length_are_bounded() -> None:
    words = [W("one", 0.0, 0.4), W("two", 0.5, 0.9), W("three", 1.95, 2.3)]  # 1.05 s pause before "three"
    assert [c.text for c in subtitles.cues(words)] == ["one two", "three"]
    long = [W(f"word{i:02d}", i * 0.3, i * 0.3 + 0.25) for i in range(40)]
    cues = subtitles.cues(long, max_line_chars=20, max_cue_seconds=4.0)
    assert all(len(c.text.split("\n")) <= 2 and max(map(len, c.text.split("\n"))) <= 20 for c in cues)
    assert all(c.end - c.start <= 4.0 for c in cues)
    assert " ".join(c.text.replace("\n", " ") for c in cues) == " ".join(w.word for w in long)


def test_a_word_longer_than_a_cue_is_a_cue_of_its_own_and_characters_join_without_spaces() -> None:
    cues = subtitles.cues([W("a", 0, 0.2), W("looooong", 0.3, 9.0), W("b", 9.1, 9.3)], max_cue_seconds=6)
    assert [c.text for c in cues] == ["a", "looooong", "b"]
    chars = [W(ch, i * 0.2, i * 0.2 + 0.15) for i, ch in enumerate("你好世界")]
    assert [c.text for c in subtitles.cues(chars, joiner="")] == ["你好世界"]
    assert Result(Path("x"), "你好世界", 1.0, chars).cues()[0].text == "你好世界"


def test_srt_and_vtt_parse_with_their_libraries() -> None:
    words = [W("hello", 0.0, 0.5), W("world", 0.6, 1.0), W("again", 3.25, 3.7)]
    result = Result(Path("x.wav"), "hello world again", 4.0, words)
    parsed = list(srt.parse(result.to_srt()))
    assert [(s.content, s.start.total_seconds(), s.end.total_seconds()) for s in parsed] == [
        ("hello world", 0.0, 1.0),
        ("again", 3.25, 3.7),
    ]
    vtt = webvtt.from_buffer(io.StringIO(result.to_vtt()))
    assert [(c.text, c.start, c.end) for c in vtt] == [
        ("hello world", "00:00:00.000", "00:00:01.000"),
        ("again", "00:00:03.250", "00:00:03.700"),
    ]


@given(
    st.lists(
        st.tuples(st.text("abcdefgh", min_size=1, max_size=12), st.floats(0, 2.5), st.floats(0.05, 1.5)),
        max_size=60,
    ),
    st.integers(10, 50),
    st.floats(1.0, 8.0),
)
def test_cues_are_ordered_disjoint_and_bounded(words: list, max_chars: int, max_seconds: float) -> None:
    t, timed = 0.0, []
    for text, gap, length in words:
        start = round(t + gap, 6)
        t = round(start + length, 6)
        timed.append(W(text, start, t))
    cues = subtitles.cues(timed, max_line_chars=max_chars, max_cue_seconds=max_seconds)
    assert " ".join(c.text.replace("\n", " ") for c in cues).split() == [w.word for w in timed]
    for a, b in zip(cues, cues[1:], strict=False):
        assert a.end <= b.start
    for c in cues:
        single = " " not in c.text and "\n" not in c.text
        assert c.end - c.start <= max_seconds or single
        assert all(len(line) <= max_chars for line in c.text.split("\n")) or single
    list(srt.parse(subtitles.to_srt(cues)))


def test_word_confidence_is_the_least_certain_character() -> None:
    tok = Tokenizer(config.load(TINY)["labels"])
    b = tok.blank
    ids = [b, 8, 8, 9, b, 0, 1, b]  # "hi a"
    best = [0.0, math.log(0.5), math.log(0.9), math.log(0.6), 0.0, 0.0, math.log(0.3), 0.0]
    words = word_timings(ids, tok, 0.02, best_logp=best)
    assert [(w.word, round(w.confidence, 6)) for w in words] == [("hi", 0.6), ("a", 0.3)]
    assert word_timings(ids, tok, 0.02)[0].confidence is None


def test_cli_writes_every_format_and_needs_an_output_dir_for_several(
    mini: dict,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt, flac = str(mini["ckpt"]), [str(f) for f in mini["flac"][:2]]
    out = tmp_path / "out"
    assert main(["transcribe", *flac, "--ckpt", ckpt, "--format", "all", "--output_dir", str(out)]) == 0
    stem = Path(flac[0]).stem
    assert sorted(p.name for p in out.glob(f"{stem}.*")) == [
        f"{stem}.{f}" for f in sorted(("json", "srt", "tsv", "txt", "vtt"))
    ]
    words = json.loads((out / f"{stem}.json").read_text())["words"]
    assert words and all(0 <= w["confidence"] <= 1 for w in words)
    assert len((out / f"{stem}.tsv").read_text().splitlines()) == len(words) + 1
    list(srt.parse((out / f"{stem}.srt").read_text()))
    list(webvtt.read(str(out / f"{stem}.vtt")))
    capsys.readouterr()
    assert main(["transcribe", *flac, "--ckpt", ckpt, "--format", "srt"]) == 2
    assert "give --output_dir (2 input file(s))" in capsys.readouterr().err
    assert main(["transcribe", flac[0], "--ckpt", ckpt, "--format", "srt", "--max_cue_seconds", "2"]) == 0
    cues = list(srt.parse(capsys.readouterr().out))
    assert cues and all((c.end - c.start).total_seconds() <= 2 or " " not in c.content for c in cues)


def test_stream_writes_cues_as_they_become_final(
    mini: dict,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt, flac = str(mini["ckpt"]), str(mini["flac"][1])
    assert (
        main(["transcribe", flac, "--ckpt", ckpt, "--stream", "--format", "srt", "--max_cue_seconds", "3"])
        == 0
    )
    streamed = list(srt.parse(capsys.readouterr().out))
    assert streamed and [s.index for s in streamed] == list(range(1, len(streamed) + 1))
    assert all((s.end - s.start).total_seconds() <= 3 or " " not in s.content for s in streamed)
    times = [(s.start, s.end) for s in streamed]
    assert all(a[1] <= b[0] for a, b in zip(times, times[1:], strict=False))
    assert main(["transcribe", flac, "--ckpt", ckpt, "--stream", "--format", "vtt"]) == 0
    assert len(webvtt.from_buffer(io.StringIO(capsys.readouterr().out)).captions) >= 1
