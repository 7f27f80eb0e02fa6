"""Speech-activity segmentation: the region rule, the energy and Silero detectors, and transcribe --vad."""

from __future__ import annotations

import numpy as np
import pytest
from test_transcribe import mini, write_checkpoint  # noqa: F401  (the module fixture and its helper)

from jasper import audio
from jasper.cli import main
from jasper.inference import vad
from jasper.inference.pipeline import load


def test_regions_need_a_long_enough_silence_and_speech_and_are_padded() -> None:
    step = 0.01
    probs = np.zeros(500)
    probs[100:150] = 0.9  # 1.0-1.5 s
    probs[160:200] = 0.9  # a 0.1 s dip: the same region
    probs[300:310] = 0.9  # 0.1 s: too short to count
    probs[400:480] = 0.8  # 4.0-4.8 s
    regions = vad.regions_from_probabilities(probs, step, 5.0, vad.Options(pad=0.1))
    assert [(round(a, 2), round(b, 2)) for a, b in regions] == [
        (0.9, 2.1),
        (3.9, 5.0),
    ]  # runs to the end: 0.2 s of silence is too short
    assert vad.speech_regions(np.zeros(0, np.float32), "none") == []


def speech_in_silence(mini: dict, lead: float, gap: float) -> tuple[np.ndarray, list[tuple[float, float]]]:  # noqa: F811
    clips = [audio.load(f) for f in mini["flac"][:2]]
    parts, spans, t = [np.zeros(int(lead * 16000), np.float32)], [], lead
    for clip in clips:
        parts += [clip, np.zeros(int(gap * 16000), np.float32)]
        spans.append((t, t + len(clip) / 16000))
        t += len(clip) / 16000 + gap
    noise = np.random.default_rng(0).normal(0, 1e-4, sum(map(len, parts))).astype(np.float32)
    return np.concatenate(parts) + noise, spans


@pytest.mark.parametrize("method", ["energy", "silero"])
def test_detectors_find_the_clips_and_skip_the_silence(mini: dict, method: str) -> None:  # noqa: F811
    if method == "silero" and vad.silero_missing():
        pytest.skip(vad.silero_missing())
    signal, spans = speech_in_silence(mini, lead=3.0, gap=4.0)
    regions = vad.speech_regions(signal, method)
    covered = sum(b - a for a, b in regions)
    assert covered < 0.7 * len(signal) / 16000  # most of the silence is skipped
    for start, end in spans:  # each clip's speech lies in the regions (0.3 s slack at its edges)
        inside = sum(max(0.0, min(b, end - 0.3) - max(a, start + 0.3)) for a, b in regions)
        assert inside >= 0.9 * (end - start - 0.6), (method, start, end, regions)


def test_transcribe_with_vad_keeps_absolute_word_times(mini: dict, tmp_path) -> None:  # noqa: F811
    signal, spans = speech_in_silence(mini, lead=5.0, gap=6.0)
    path = tmp_path / "long.wav"
    audio.write(path, signal, 16000)
    pipe = load(str(mini["ckpt"]))
    [plain] = pipe.transcribe([path])
    [cut] = pipe.transcribe([path], vad="energy")
    assert cut.words and all(
        any(a - 0.5 <= w.start and w.end <= b + 0.5 for a, b in spans) for w in cut.words
    )
    assert [w.word for w in cut.words] == cut.text.split()
    assert len(cut.words) < len(plain.words)  # the random model's words in the silence are gone
    assert main(["transcribe", str(path), "--ckpt", str(mini["ckpt"]), "--vad", "energy"]) == 0


@pytest.mark.parametrize("method", ["energy", "silero"])
def test_all_silence_gives_an_empty_transcript(mini: dict, tmp_path, method: str) -> None:  # noqa: F811
    if method == "silero" and vad.silero_missing():
        pytest.skip(vad.silero_missing())
    path = tmp_path / "silence.wav"
    audio.write(path, np.zeros(5 * 16000, np.float32), 16000)
    assert vad.speech_regions(np.zeros(5 * 16000, np.float32), method) == []
    [result] = load(str(mini["ckpt"])).transcribe([path], vad=method)
    assert result.text == "" and result.words == [] and result.duration == 5.0


def test_stream_with_vad_skips_silent_chunks(mini: dict, tmp_path) -> None:  # noqa: F811
    from jasper.inference import streaming

    signal, spans = speech_in_silence(mini, lead=6.0, gap=8.0)
    pipe = load(str(mini["ckpt"]))
    found = {}
    for method in ("none", "energy"):
        streamer = streaming.StreamingTranscriber(pipe.model, pipe.features, pipe.tokenizer, vad=method)
        blocks = (signal[i : i + 8000] for i in range(0, len(signal), 8000))
        found[method] = (list(streaming.transcribe_stream(blocks, streamer)), streamer.stats.skipped)
    words, skipped = found["energy"]
    assert skipped >= 4 and found["none"][1] == 0  # 6 s lead and two 8 s gaps, in 2 s chunks
    assert words and len(words) < len(found["none"][0])
    assert all(any(a - 3.5 <= w.start and w.end <= b + 3.5 for a, b in spans) for w in words)
    path = tmp_path / "s.wav"
    audio.write(path, signal, 16000)
    assert main(["transcribe", str(path), "--ckpt", str(mini["ckpt"]), "--stream", "--vad", "energy"]) == 0
