"""`jasper transcribe --stream` and jasper.inference.streaming: equal to the whole-file path when one window
holds the stream, independent of how the audio arrives, bounded in memory, and readable from a pipe."""

from __future__ import annotations

import json
import subprocess
import sys

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import require_shared
from test_transcribe import ENV, write_checkpoint

from jasper import audio
from jasper.inference.pipeline import load, log_probs, word_timings
from jasper.inference.streaming import StreamingTranscriber, read_blocks, transcribe_stream


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = require_shared("data", "librispeech-real-mini")
    tmp = tmp_path_factory.mktemp("stream")
    ckpt = write_checkpoint(tmp / "t.pt")
    flacs = sorted(root.rglob("*.flac"))
    long = np.concatenate([audio.load(f) for f in flacs[:6]])
    wav = tmp / "long.wav"
    sf.write(wav, long, 16000, subtype="PCM_16")
    return {"tmp": tmp, "ckpt": ckpt, "pipe": load(ckpt, device="cpu"), "flac": flacs[0], "wav": wav}


def stream_words(pipe, samples: np.ndarray, block: int, **seconds: float) -> list:
    streamer = StreamingTranscriber(pipe.model, pipe.features, pipe.tokenizer, **seconds)
    blocks = (samples[i : i + block] for i in range(0, samples.size, block))
    return list(transcribe_stream(blocks, streamer))


def test_a_window_holding_the_whole_stream_gives_the_whole_file_words(kit: dict) -> None:
    pipe = kit["pipe"]
    samples = audio.load(kit["flac"])
    lp = log_probs(samples, pipe.model, pipe.features, chunk_seconds=0, pad_leading=0)
    frame_seconds = pipe.features.hop_length * 2 / pipe.features.sample_rate
    whole = word_timings(lp.argmax(-1).tolist(), pipe.tokenizer, frame_seconds, 0.0, samples.size / 16000)
    assert len(whole) > 3
    streamed = stream_words(pipe, samples, 4000, chunk_seconds=100, context_seconds=100, lookahead_seconds=0)
    assert streamed == whole


def test_the_words_do_not_depend_on_how_the_audio_arrives(kit: dict) -> None:
    pipe = kit["pipe"]
    samples = audio.load(kit["wav"])[: 20 * 16000]
    opts = {"chunk_seconds": 1.0, "context_seconds": 2.0, "lookahead_seconds": 0.5}
    at_once = stream_words(pipe, samples, samples.size, **opts)
    assert len(at_once) > 10
    assert stream_words(pipe, samples, 777, **opts) == at_once
    assert stream_words(pipe, samples, 16000, **opts) == at_once
    times = [t for w in at_once for t in (w.start, w.end)]
    assert times == sorted(times) and times[-1] <= samples.size / 16000


def test_memory_is_one_window_whatever_the_length(kit: dict) -> None:
    pipe = kit["pipe"]
    samples = np.tile(audio.load(kit["wav"]), 2)
    streamer = StreamingTranscriber(pipe.model, pipe.features, pipe.tokenizer, 1.0, 2.0, 0.5)
    block = 8000
    largest = 0
    for i in range(0, samples.size, block):
        streamer.feed(samples[i : i + block])
        largest = max(largest, streamer.buffer.size)
    streamer.finish()
    assert largest <= streamer.context + streamer.chunk + streamer.lookahead + block
    assert samples.size > 4 * largest
    assert sum(streamer.stats.audio_seconds) == pytest.approx(samples.size / 16000)


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jasper.cli", "transcribe", *args], input=stdin, capture_output=True, env=ENV
    )


def test_a_file_a_wav_pipe_and_raw_pcm_on_stdin_give_the_same_words(kit: dict) -> None:
    base = ["--ckpt", str(kit["ckpt"]), "--stream", "--stream_chunk", "1"]
    from_file = cli(str(kit["wav"]), *base)
    assert from_file.returncode == 0, from_file.stderr
    words = from_file.stdout.decode().strip()
    assert len(words.split()) > 10
    assert "real-time factor" in from_file.stderr.decode()
    piped = cli("-", *base, stdin=kit["wav"].read_bytes())
    assert piped.returncode == 0 and piped.stdout.decode().strip() == words
    pcm = (sf.read(kit["wav"], dtype="int16")[0]).astype("<i2").tobytes()
    raw = cli("-", *base, "--raw_pcm", stdin=pcm)
    assert raw.returncode == 0 and raw.stdout.decode().strip() == words


def test_json_words_carry_times_and_44k_stereo_is_resampled_on_the_fly(kit: dict) -> None:
    mono = audio.load(kit["wav"])[: 15 * 16000]
    stereo = soxr.resample(np.stack([mono, mono], axis=1), 16000, 44100)
    wav44 = kit["tmp"] / "stereo44.wav"
    sf.write(wav44, stereo, 44100)
    wav16 = kit["tmp"] / "mono16.wav"
    sf.write(wav16, mono, 16000)
    base = ["--ckpt", str(kit["ckpt"]), "--stream", "--format", "json"]
    runs = [cli(str(p), *base) for p in (wav16, wav44)]
    assert all(r.returncode == 0 for r in runs)
    words16, words44 = ([json.loads(line) for line in r.stdout.decode().splitlines()] for r in runs)
    assert set(words16[0]) == {"word", "start", "end"}
    assert all(w["start"] <= w["end"] <= 15.0 for w in words16)
    hyp = " ".join(w["word"] for w in words44)
    assert jiwer.cer(" ".join(w["word"] for w in words16), hyp) < 0.1  # random weights: fragile words


def test_bad_stream_inputs_are_one_line_errors(kit: dict) -> None:
    flac_pipe = cli("-", "--ckpt", str(kit["ckpt"]), "--stream", stdin=kit["flac"].read_bytes())
    assert flac_pipe.returncode == 2
    err = flac_pipe.stderr.decode()
    assert "--raw_pcm" in err and "Traceback" not in err
    two = cli(str(kit["flac"]), str(kit["wav"]), "--ckpt", str(kit["ckpt"]), "--stream")
    assert two.returncode == 2 and "one input" in two.stderr.decode()
    zero = cli(str(kit["flac"]), "--ckpt", str(kit["ckpt"]), "--stream", "--stream_chunk", "0")
    assert zero.returncode == 2 and "chunk_seconds must be > 0" in zero.stderr.decode()
    with pytest.raises(audio.AudioError, match="raw PCM is read from stdin only"):
        next(read_blocks(kit["flac"], 16000, raw=True))
