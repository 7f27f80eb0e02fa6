"""Speech to text in memory: a trained model with its features and labels, run on whole recordings.

The library behind `jasper transcribe`, `jasper infer`'s file modes and the quickstart's report:

    pipe = jasper.inference.pipeline.load("Jasper_best_checkpoint.pt")
    for result in pipe.transcribe(["talk.mp3"]):
        print(result.text, result.words[:3])

Any format soundfile reads, any sample rate (resampled with soxr), any channel count (averaged).

Long recordings run in bounded memory without changing what the model sees. Log-mel frames are
computed in segments (each with enough extra samples on both sides that every kept frame equals
the frame a whole-recording STFT gives) and normalised with the whole recording's statistics,
exactly as an unchunked run normalises. The acoustic model then runs on overlapping windows of
`chunk_seconds` and the log-probs are stitched at the middle of each `chunk_overlap`, so only
frames whose receptive field reaches past a window edge can differ from an unchunked run. The
model's activations depend on the window only; what grows with the recording is the audio and
its features (64 + 25.6 kB per second): a 10-minute file costs about 55 MB more than a short one.

Word timings come from the greedy CTC alignment: a word starts at the first frame of its first
character and ends after the last frame of its last character. One output frame lasts
`hop_length * encoder stride / sample_rate` (20 ms for Jasper and QuartzNet); the
`pad_leading` frames prepended before the model are subtracted.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jasper import audio as audio_io
from jasper import checkpoint, config
from jasper.decoding import collapse
from jasper.device import inference_dtype
from jasper.features import FilterbankFeatures, normalize_batch
from jasper.hub.models import config_of, read_checkpoint
from jasper.inference import subtitles
from jasper.inference import vad as speech
from jasper.model import Jasper, output_stride
from jasper.text import Tokenizer

log = logging.getLogger(__name__)

CHUNK_SECONDS = 30.0
CHUNK_OVERLAP = 4.0
PAD_LEADING = 16
# A silence this long inside a word is a word boundary the model missed (word_timings).
WORD_GAP_SECONDS = 1.0
# Log-mel frames computed per segment; any size gives the same frames, this bounds the STFT's memory.
SEGMENT_FRAMES = 6000


@dataclass
class Word:
    """A word, its time span in seconds from the start of the recording, and its confidence (0-1).

    The confidence is that of the word's least certain character: for each character, the highest
    posterior of its label over the frames CTC emitted it on; the word takes the lowest of them.
    Why this measure: a misrecognised word usually has one doubtful letter among confident ones, so
    the minimum separates right from wrong words where a mean over all frames (blanks included,
    which are nearly always confident) dilutes it.
    """

    word: str
    start: float
    end: float
    confidence: float | None = None


@dataclass
class Result:
    """One recording's transcript."""

    path: Path
    text: str
    duration: float
    words: list[Word] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "text": self.text,
            "duration": round(self.duration, 3),
            "words": [
                {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(w).items() if v is not None}
                for w in self.words
            ],
        }

    def cues(self, **options: Any) -> list[subtitles.Cue]:
        """Subtitle cues from the word times (`jasper.inference.subtitles.cues` and its options)."""
        if len(self.words) > 1 and " " not in self.text:  # no space label: characters are the words
            options.setdefault("joiner", "")
        return subtitles.cues(self.words, **options)

    def to_srt(self, **options: Any) -> str:
        return subtitles.to_srt(self.cues(**options))

    def to_vtt(self, **options: Any) -> str:
        return subtitles.to_vtt(self.cues(**options))

    def to_tsv(self) -> str:
        return subtitles.to_tsv(self.words)


def log_mel(
    audio: torch.Tensor, features: FilterbankFeatures, segment_frames: int = SEGMENT_FRAMES
) -> torch.Tensor:
    """Unnormalised log-mel frames `[n_filt, ceil(L / hop)]` of a 1-D recording, computed in segments.

    Each segment is extended by enough samples on both sides that pre-emphasis and the centred STFT
    of every kept frame see exactly the samples a whole-recording run sees; the recording's own
    edges keep the STFT's reflect padding, as in a whole-recording run.
    """
    plain = copy.copy(features)  # shares the buffers; only this copy's normalisation is switched off
    plain.normalize, plain.training = "none", False
    hop = features.hop_length
    context = math.ceil((features.n_fft // 2 + 1) / hop)
    total = audio.shape[0]
    n_frames = int(features.valid_frames(torch.tensor([total]))[0])
    parts = []
    for g0 in range(0, n_frames, segment_frames):
        g1 = min(g0 + segment_frames, n_frames)
        a, b = max(0, (g0 - context) * hop), min(total, (g1 + context) * hop)
        x, _ = plain(audio[None, a:b], torch.tensor([b - a], device=audio.device))
        first = g0 - a // hop
        parts.append(x[0, :, first : first + g1 - g0])
    return torch.cat(parts, dim=1) if parts else audio.new_zeros(features.n_filt, 0)


def normalized_features(audio: torch.Tensor, features: FilterbankFeatures) -> torch.Tensor:
    """Model input `[n_filt, ceil(L / hop)]`: the valid frames an unchunked `features(audio)` gives."""
    x = log_mel(audio, features)
    lengths = torch.tensor([x.shape[1]], device=x.device)
    return normalize_batch(x[None], lengths, features.normalize)[0]


@torch.inference_mode()
def log_probs(
    audio: np.ndarray | torch.Tensor,
    model: nn.Module,
    features: FilterbankFeatures,
    chunk_seconds: float = CHUNK_SECONDS,
    chunk_overlap: float = CHUNK_OVERLAP,
    pad_leading: int = PAD_LEADING,
    stride: int | None = None,
) -> torch.Tensor:
    """Frame log-probabilities `[T_out, n_classes]` (float32, CPU) of one recording at the model's rate.

    `chunk_seconds <= 0` runs the whole recording in one window. `stride` (output_stride) must be
    given for a TorchScript model, whose modules cannot be inspected.
    """
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    stride = stride or output_stride(model)
    samples = torch.as_tensor(np.asarray(audio, dtype=np.float32)).to(device)
    feats = normalized_features(samples, features)
    if pad_leading:
        feats = F.pad(feats, (pad_leading, 0))
    total = feats.shape[1]
    frames_per_second = features.sample_rate / features.hop_length
    window = int(chunk_seconds * frames_per_second) // stride * stride
    overlap = math.ceil(chunk_overlap * frames_per_second / (2 * stride)) * 2 * stride
    if chunk_seconds <= 0 or total <= window:
        starts = [0]
        window = total
    else:
        if overlap >= window:
            raise ValueError(
                f"chunk_overlap ({chunk_overlap} s) must be shorter than chunk_seconds ({chunk_seconds} s)"
            )
        step = window - overlap
        starts = list(range(0, max(total - overlap, 1), step))
    pieces = []
    for k, start in enumerate(starts):
        end = min(start + window, total)
        x = feats[None, :, start:end].to(dtype)
        out, out_lens = model(x, torch.tensor([end - start], device=device))
        out = out[0, : int(out_lens[0])].float().cpu()
        keep_from = 0 if k == 0 else (start + overlap // 2) // stride
        keep_to = (starts[k + 1] + overlap // 2) // stride if k + 1 < len(starts) else None
        offset = start // stride
        pieces.append(out[keep_from - offset : None if keep_to is None else keep_to - offset])
    return torch.cat(pieces, dim=0)


def word_timings(
    ids: Sequence[int],
    tokenizer: Tokenizer,
    frame_seconds: float,
    offset: float = 0.0,
    duration: float = math.inf,
    best_logp: Sequence[float] | None = None,
    max_gap: float = WORD_GAP_SECONDS,
) -> list[Word]:
    """Words with start/end times from frame argmax ids (CTC collapse rules; a space label splits
    words; without a space label every character is a word).

    A silence of `max_gap` seconds or more between two characters also ends a word: a model that
    missed the space there would otherwise give one "word" spanning the pause (and a subtitle cue
    across it). `offset` (seconds of prepended padding) is subtracted; times are clipped to
    [0, duration]. With `best_logp`, each frame's top log-prob, words get their confidence (`Word`).
    """
    runs: list[list[int]] = []  # [label, first frame, last frame] per emitted label
    prev = tokenizer.blank
    for t, p in enumerate(ids):
        if p != tokenizer.blank:
            if p != prev:
                runs.append([p, t, t])
            else:
                runs[-1][2] = t
        prev = p
    words: list[Word] = []
    current: list[list[int]] = []
    by_character = not any(label.isspace() for label in tokenizer.labels)
    gap_frames = max_gap / frame_seconds
    for i, run in enumerate([*runs, None]):
        if run is not None and not tokenizer.labels[run[0]].isspace():
            current.append(run)
            after = runs[i + 1] if i + 1 < len(runs) else None
            if not by_character and not (after is not None and after[1] - run[2] > gap_frames):
                continue
        if current:
            text = "".join(tokenizer.labels[r[0]] for r in current)
            start = min(max(current[0][1] * frame_seconds - offset, 0.0), duration)
            end = min(max((current[-1][2] + 1) * frame_seconds - offset, 0.0), duration)
            confidence = None
            if best_logp is not None:
                confidence = math.exp(min(max(best_logp[r[1] : r[2] + 1]) for r in current))
            words.append(Word(text, start, end, confidence))
        current = []
    return words


def calibration_inputs(
    paths: Iterable[str | Path],
    features: FilterbankFeatures,
    pad_leading: int = PAD_LEADING,
    files: int = 4,
    seconds: float = CHUNK_SECONDS,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Model inputs (features, lengths) of the first `seconds` of the first `files` readable
    recordings, computed as `log_probs` computes them: what int8 (`jasper.inference.engines.prepare`)
    calibrates its activation ranges on when the input is files rather than a manifest.
    Unreadable files are passed over here; transcription reports them."""
    inputs = []
    for path in paths:
        if len(inputs) == files:
            break
        try:
            audio = audio_io.load(path, features.sample_rate, duration=seconds)
        except audio_io.AudioError:
            continue
        if audio.size <= features.n_fft:
            continue
        feats = F.pad(normalized_features(torch.from_numpy(audio), features), (pad_leading, 0))
        inputs.append((feats[None], torch.tensor([feats.shape[1]])))
    return inputs


def iter_transcribe(
    paths: Iterable[str | Path],
    model: nn.Module,
    features: FilterbankFeatures,
    tokenizer: Tokenizer,
    chunk_seconds: float = CHUNK_SECONDS,
    chunk_overlap: float = CHUNK_OVERLAP,
    pad_leading: int = PAD_LEADING,
    stride: int | None = None,
    beam_decoder: Any = None,
    on_error: Callable[[Path, audio_io.AudioError], None] | None = None,
    vad: str = "none",
) -> Iterator[Result]:
    """`transcribe`, one result at a time (for printing as files finish).

    With a `jasper.lm.beam.BeamSearchDecoder`, the text comes from beam search (with its LM); word
    times still come from the greedy alignment, so they are given only when both agree on the words.
    With `vad` ("energy" or "silero", `jasper.inference.vad`) only the speech regions are
    recognised, each on its own; word times stay those of the whole recording.
    A file that cannot be read raises its `AudioError`; with `on_error`, it is handed to
    `on_error(path, error)` instead and the next file follows (a batch tool's skip-and-go-on).
    """
    stride = stride or output_stride(model)
    frame_seconds = features.hop_length * stride / features.sample_rate
    offset = pad_leading * features.hop_length / features.sample_rate
    rate = features.sample_rate
    spaced = any(label.isspace() for label in tokenizer.labels)
    for path in paths:
        try:
            audio = audio_io.load(path, rate)
        except audio_io.AudioError as e:
            if on_error is None:
                raise
            on_error(Path(path), e)
            continue
        duration = audio.size / rate
        if vad == "none":
            regions = [(0.0, duration)] if audio.size else []
        else:
            at_16k = (
                audio if rate == speech.SAMPLE_RATE else audio_io.resample(audio, rate, speech.SAMPLE_RATE)
            )
            regions = speech.speech_regions(at_16k, vad)
        texts, words = [], []
        for start, end in regions:
            piece = audio[round(start * rate) : round(end * rate)]
            if vad != "none" and piece.size <= features.n_fft:  # a sliver at a region's edge
                continue
            lp = log_probs(piece, model, features, chunk_seconds, chunk_overlap, pad_leading, stride)
            best, ids = lp.float().max(dim=-1)
            ids = ids.tolist()
            found = word_timings(ids, tokenizer, frame_seconds, offset - start, end, best.tolist())
            text = tokenizer.decode(collapse(ids, tokenizer.blank))
            if spaced and len(found) != len(text.split()):  # a space inserted at a pause (word_timings)
                text = " ".join(w.word for w in found)
            if beam_decoder is not None:
                text = beam_decoder.decode(lp.float().cpu().numpy())
                if [w.word for w in found] != text.split():
                    found = []
            texts.append(text.strip())
            words += found
        yield Result(Path(path), " ".join(t for t in texts if t), duration, words)


def transcribe(
    paths: Iterable[str | Path],
    model: nn.Module,
    features: FilterbankFeatures,
    tokenizer: Tokenizer,
    chunk_seconds: float = CHUNK_SECONDS,
    chunk_overlap: float = CHUNK_OVERLAP,
    pad_leading: int = PAD_LEADING,
    stride: int | None = None,
    vad: str = "none",
) -> list[Result]:
    """Greedy transcripts with word timings for audio files, on the device the model is on.

    `model` in eval mode (its parameters' dtype is used for the input), `features` a
    `FilterbankFeatures` in eval mode on the same device. Recordings longer than `chunk_seconds`
    run in overlapping windows (see the module docstring); `chunk_seconds=0` never chunks. `vad`
    ("energy", "silero") recognises only the speech regions (`jasper.inference.vad`).
    """
    return list(
        iter_transcribe(
            paths, model, features, tokenizer, chunk_seconds, chunk_overlap, pad_leading, stride, vad=vad
        )
    )


@dataclass
class Pipeline:
    """A loaded model with its features and labels: what `transcribe` needs, bundled."""

    cfg: dict[str, Any]
    model: nn.Module  # the Jasper model, or what jasper.inference.engines.prepare made of it
    features: FilterbankFeatures
    tokenizer: Tokenizer
    device: torch.device
    pad_leading: int = PAD_LEADING  # zero frames the model was trained to see first (NeMo's: 0)

    def transcribe(
        self,
        paths: Iterable[str | Path],
        hotwords: Sequence[str] | dict[str, float] = (),
        lm: str | Path | None = None,
        **options: Any,
    ) -> list[Result]:
        """`transcribe(paths, self.model, self.features, self.tokenizer, **options)`, with the
        model's own `pad_leading` unless `options` give one (`vad="silero"` among them). With
        `hotwords` (words, or {word: weight}) or an `lm` directory, beam search gives the text
        (`jasper.lm.beam.BeamSearchDecoder`)."""
        options.setdefault("pad_leading", self.pad_leading)
        if not hotwords and lm is None:
            return transcribe(paths, self.model, self.features, self.tokenizer, **options)
        from jasper.lm.beam import BeamSearchDecoder

        with BeamSearchDecoder(self.tokenizer.labels, lm, hotwords=hotwords) as beam:
            return list(
                iter_transcribe(
                    paths, self.model, self.features, self.tokenizer, beam_decoder=beam, **options
                )
            )


def model_from_checkpoint(cfg: dict[str, Any], state: dict[str, Any], ema: bool, source: str) -> Jasper:
    """The model whose parameters are the checkpoint's tensors (float32), not copies of them.

    Building on the meta device skips the random initialisation and the second copy of the
    weights that `load_state_dict` into an initialised model needs: for Jasper 10x5 DR that is
    1.3 GB of peak memory and several seconds less. `ema` picks `ema_state_dict` when present.
    """
    key = "ema_state_dict" if ema and state.get("ema_state_dict") else "state_dict"
    if ema and key == "state_dict":
        log.warning("%s has no EMA weights; using its plain state_dict", source)
    with torch.device("meta"):
        model = Jasper.from_config(cfg)
    with warnings.catch_warnings():
        # The strict key and shape check with readable errors; copying onto meta tensors is a no-op.
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        checkpoint.load_state_dict(model, state[key], source=f"{source} [{key}]")
    model.load_state_dict(checkpoint.clean_state_dict(state[key]), strict=True, assign=True)
    return model.float()


def load(
    ckpt: str | Path,
    model_config: str | Path | None = None,
    ema: bool = False,
    overrides: Sequence[str] = (),
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> Pipeline:
    """The pipeline of a published model's name, a `.pt` or `.nemo` file, or a URL
    (`jasper.hub.models.read_checkpoint`), built from `model_config` when given, else from the
    checkpoint's own config. Also `jasper.load_model`.

    `ema` loads the EMA weights; `precision` (fp32, bf16, or fp16 on CUDA) is the dtype the weights
    are cast to (`jasper.device.PRECISIONS`).
    """
    if precision == "int8":
        raise config.ConfigError("int8 needs calibration data: see jasper.inference.quantize.quantize")
    state = read_checkpoint(ckpt)
    cfg = config_of(state, model_config, overrides, source=str(ckpt))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise config.ConfigError("device cuda was asked for, but CUDA is not available")
    model = model_from_checkpoint(cfg, state, ema, source=str(ckpt))
    pad_leading = int(state.get("pad_leading", PAD_LEADING))
    del state
    model.eval().to(device=device, dtype=inference_dtype(precision, device))
    features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features"))
    features.eval().to(device)
    return Pipeline(cfg, model, features, Tokenizer(cfg["labels"]), device, pad_leading)
