"""Streaming transcription: audio in blocks from a file or a pipe, words out as soon as they are final.

Why: a live source, or a recording of hours, should neither wait for its end nor sit in memory.

How: the stream is cut into chunks of `chunk_seconds`. Each chunk is decoded inside a window that
adds `context_seconds` of audio before it and `lookahead_seconds` after it; the window's features
are normalised as an utterance of their own (per-feature mean and std over the window, as training
normalises each utterance), the model runs once over the window, and only the output frames of
the chunk itself are kept. With context and lookahead of at least half the model's receptive field
(jasper5x3_cpu: 2.6 s), every kept frame sees all the audio it depends on; what differs from
`jasper transcribe` without --stream is the normalisation (the window's statistics instead of the
whole recording's) and no leading padding. A window that holds the whole stream gives exactly the
whole-file transcript.

Speech activity (`vad`, as `jasper transcribe --vad`): a chunk whose audio and lookahead hold no
speech is not decoded; it ends the pending word. Chunks stay fixed in length.

Words: the greedy CTC path is collapsed across chunk boundaries; a word is final once a space
follows it (or the stream ends), at most chunk + lookahead seconds after its audio plus the
compute time of a window. Memory: one window of audio and the pending word; nothing grows with the
length of the stream.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import nn

from jasper import audio as audio_io
from jasper.features import FilterbankFeatures
from jasper.inference import vad as speech
from jasper.inference.pipeline import Word, normalized_features, output_stride
from jasper.text import Tokenizer

CHUNK_SECONDS = 2.0
CONTEXT_SECONDS = 3.0
LOOKAHEAD_SECONDS = 1.0
BLOCK_SECONDS = 0.5  # what one read takes from a file or a pipe


@dataclass
class StreamStats:
    """Per decoded window: the chunk's audio seconds and the compute seconds it took."""

    audio_seconds: list[float] = field(default_factory=list)
    compute_seconds: list[float] = field(default_factory=list)
    skipped: int = 0  # chunks without speech, not decoded (--vad)

    @property
    def real_time_factor(self) -> float:
        return sum(self.compute_seconds) / max(sum(self.audio_seconds), 1e-9)


class StreamingTranscriber:
    """Feed it audio blocks at the model's sample rate; it returns the words that became final.

    `model` and `features` in eval mode on one device (the model's parameter dtype is its input's).
    """

    def __init__(
        self,
        model: nn.Module,
        features: FilterbankFeatures,
        tokenizer: Tokenizer,
        chunk_seconds: float = CHUNK_SECONDS,
        context_seconds: float = CONTEXT_SECONDS,
        lookahead_seconds: float = LOOKAHEAD_SECONDS,
        stride: int | None = None,
        vad: str = "none",
    ) -> None:
        if chunk_seconds <= 0 or context_seconds < 0 or lookahead_seconds < 0:
            raise ValueError("chunk_seconds must be > 0, context_seconds and lookahead_seconds >= 0")
        self.model, self.features, self.tokenizer, self.vad = model, features, tokenizer, vad
        self.step = features.hop_length * (stride or output_stride(model))  # samples per output frame
        self.rate = features.sample_rate

        def samples(seconds: float) -> int:  # whole output frames, so every window starts on one
            return math.ceil(seconds * self.rate / self.step) * self.step

        self.chunk, self.context, self.lookahead = (
            max(self.step, samples(chunk_seconds)),
            samples(context_seconds),
            samples(lookahead_seconds),
        )
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start = 0  # stream sample index of buffer[0]
        self.decoded_to = 0  # stream sample index up to which output frames are decoded
        self.prev = tokenizer.blank
        self.runs: list[list[int]] = []  # [label, first frame, last frame] of the pending word
        self.stats = StreamStats()

    @property
    def frame_seconds(self) -> float:
        return self.step / self.rate

    @property
    def received(self) -> int:
        """Samples fed so far."""
        return self.buffer_start + self.buffer.size

    def feed(self, block: np.ndarray) -> list[Word]:
        """Add samples; decode every chunk whose lookahead has arrived; the words now final."""
        self.buffer = np.concatenate([self.buffer, np.asarray(block, dtype=np.float32).reshape(-1)])
        words: list[Word] = []
        while self.received - self.decoded_to >= self.chunk + self.lookahead:
            words += self._decode(self.decoded_to + self.chunk)
        return words

    def finish(self) -> list[Word]:
        """End of stream: decode what is left and return the last words."""
        words: list[Word] = []
        while self.decoded_to < self.received:
            words += self._decode(min(self.decoded_to + self.chunk, self.received))
        return words + self._close_word(math.inf)

    @torch.inference_mode()
    def _decode(self, end: int) -> list[Word]:
        """Decode the chunk [decoded_to, end) inside its window; drop audio no window needs again."""
        started = time.perf_counter()
        start = self.decoded_to
        a, b = max(0, start - self.context), min(self.received, end + self.lookahead)
        audio = self.buffer[a - self.buffer_start : b - self.buffer_start]
        if self.vad != "none" and not self._has_speech(
            self.buffer[start - self.buffer_start : b - self.buffer_start]
        ):
            words = self._close_word(start // self.step)  # silence ends the pending word
            self.prev = self.tokenizer.blank
            self.stats.skipped += 1
        else:
            window = torch.from_numpy(audio).to(self.device)
            feats = normalized_features(window, self.features)
            out, out_lens = self.model(
                feats[None].to(self.dtype), torch.tensor([feats.shape[1]], device=self.device)
            )
            first = (start - a) // self.step
            last = math.ceil((end - a) / self.step) if end < self.received else int(out_lens[0])
            ids = out[0, first:last].argmax(dim=-1).tolist()
            words = self._collapse(ids, start // self.step)
        self.decoded_to = end
        keep_from = max(0, end - self.context) - self.buffer_start
        if keep_from > 0:
            self.buffer, self.buffer_start = self.buffer[keep_from:], self.buffer_start + keep_from
        self.stats.audio_seconds.append((end - start) / self.rate)
        self.stats.compute_seconds.append(time.perf_counter() - started)
        return words

    def _has_speech(self, audio: np.ndarray) -> bool:
        """Whether the chunk and its lookahead hold speech (`jasper.inference.vad`): a chunk without
        any is not decoded at all."""
        if self.rate != speech.SAMPLE_RATE:
            audio = audio_io.resample(audio, self.rate, speech.SAMPLE_RATE)
        return bool(speech.speech_regions(audio, self.vad))

    def _collapse(self, ids: list[int], first_frame: int) -> list[Word]:
        """CTC collapse across calls (the same rules as `pipeline.word_timings`); finished words."""
        words: list[Word] = []
        blank = self.tokenizer.blank
        for t, p in enumerate(ids, start=first_frame):
            if p != blank:
                if self.tokenizer.labels[p].isspace():
                    if p != self.prev:
                        words += self._close_word(t)
                elif p != self.prev:
                    self.runs.append([p, t, t])
                elif self.runs:
                    self.runs[-1][2] = t
            self.prev = p
        return words

    def _close_word(self, frame: float) -> list[Word]:
        """The pending word as a `Word` (none if empty); times in seconds of the stream."""
        if not self.runs:
            return []
        text = "".join(self.tokenizer.labels[r[0]] for r in self.runs)
        duration = self.received / self.rate
        start = min(self.runs[0][1] * self.frame_seconds, duration)
        end = min((self.runs[-1][2] + 1) * self.frame_seconds, duration)
        self.runs = []
        return [Word(text, start, end)]


def read_blocks(
    source: str | Path, sample_rate: int, raw: bool = False, block_seconds: float = BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `sample_rate` from a file, or from stdin when `source` is `-`.

    `raw`: signed 16-bit little-endian mono PCM at `sample_rate` (stdin only). Otherwise any format
    libsndfile reads; from a pipe that means WAV, OGG/Opus, AU and the like, not FLAC (libsndfile
    needs to seek in a FLAC stream). Other rates are resampled by a streaming soxr resampler.
    """
    if raw:
        if str(source) != "-":
            raise audio_io.AudioError(f"{source}: raw PCM is read from stdin only (pass -)")
        yield from _raw_blocks(sys.stdin.buffer, sample_rate, block_seconds)
        return
    path = "/dev/stdin" if str(source) == "-" else str(source)
    if path != "/dev/stdin" and not Path(path).is_file():
        raise audio_io.AudioError(f"{source}: no such audio file")
    try:
        f = sf.SoundFile(path)
    except (RuntimeError, sf.LibsndfileError) as e:
        hint = " (from a pipe, send WAV or OGG, or raw PCM with --raw_pcm)" if path == "/dev/stdin" else ""
        raise audio_io.AudioError(f"{source}: unreadable audio ({e}){hint}") from None
    with f:
        resampler = (
            soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
            if f.samplerate != sample_rate
            else None
        )
        frames = max(1, int(block_seconds * f.samplerate))
        while True:
            block = f.read(frames, dtype="float32", always_2d=True)
            last = len(block) < frames
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            if not np.isfinite(mono).all():
                raise audio_io.AudioError(f"{source}: non-finite samples (NaN or infinity)")
            out = resampler.resample_chunk(mono, last=last) if resampler is not None else mono
            if out.size:
                yield np.ascontiguousarray(out, dtype=np.float32)
            if last:
                return


def _raw_blocks(stream: BinaryIO, sample_rate: int, block_seconds: float) -> Iterator[np.ndarray]:
    size = 2 * max(1, int(block_seconds * sample_rate))
    pending = b""
    while chunk := stream.read(size):
        data = pending + chunk
        usable = len(data) - len(data) % 2
        pending = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


def transcribe_stream(blocks: Iterable[np.ndarray], streamer: StreamingTranscriber) -> Iterator[Word]:
    """Each final word of the stream, as soon as it is final."""
    for block in blocks:
        yield from streamer.feed(block)
    yield from streamer.finish()
