"""Audio in: read any soundfile format, down-mix, resample (soxr), trim silence, perturb speed.

Everything here works on 1-D float32 numpy arrays at a known sample rate, on the CPU, in data
loader workers. Errors name the file, because a bad file in a 280,000-file corpus has to be
findable.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
TRIM_TOP_DB = 60.0
TRIM_FRAME = 2048
TRIM_HOP = 512


class AudioError(RuntimeError):
    """An audio file that cannot be used; the message names the file."""


def info(path: str | Path) -> sf._SoundFileInfo:
    """Header information (frames, rate, channels, format) without reading the samples."""
    try:
        return sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioError(f"{path}: unreadable audio ({e})") from None


def load(
    path: str | Path, sample_rate: int = SAMPLE_RATE, offset: float = 0.0, duration: float = 0.0
) -> np.ndarray:
    """Read `path` as mono float32 at `sample_rate`.

    Channels are averaged per sample (the reference averaged over the wrong axis). `offset` and
    `duration` are in seconds of the file, as in the reference's manifests; 0 means whole file.
    NaN or infinite samples are an error: the model would turn them into a NaN transcript.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: a directory, not an audio file")
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            if offset > 0:
                f.seek(int(offset * rate))
            frames = int(duration * rate) if duration > 0 else -1
            samples = f.read(frames=frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioError(f"{path}: unreadable audio ({e})") from None
    if not np.isfinite(samples).all():  # float WAVs can hold them; the features would be NaN
        raise AudioError(f"{path}: non-finite samples (NaN or infinity)")
    audio = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def resample(audio: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """High-quality resampling with soxr (the same family of filters as sox's `rate`)."""
    if rate_in == rate_out or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def speed_perturb(audio: np.ndarray, rate: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Change tempo and pitch together, like sox's `speed` effect: `rate > 1` is shorter audio.

    The samples are read as if recorded at `rate * sample_rate` and resampled back, so the output
    has `len / rate` samples.
    """
    if rate <= 0:
        raise ValueError(f"speed rate must be positive, got {rate}")
    if rate == 1.0:
        return audio
    return resample(audio, sample_rate * rate, sample_rate)


def nonsilent_region(
    audio: np.ndarray, top_db: float = TRIM_TOP_DB, frame_length: int = TRIM_FRAME, hop_length: int = TRIM_HOP
) -> tuple[int, int]:
    """[start, end) samples of the part louder than `top_db` below the loudest frame.

    librosa's `effects.trim` rule: centred frames (zero padded), mean-square energy per frame in dB
    relative to the maximum; the region spans the first to the last frame above the threshold.
    Unlike librosa, all-zero audio has no non-silent region (librosa keeps all of it).
    """
    if audio.size == 0 or not np.any(audio):
        return 0, 0
    padded = np.pad(audio.astype(np.float64), frame_length // 2)
    n_frames = 1 + (padded.size - frame_length) // hop_length
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, frame_length), strides=(padded.strides[0] * hop_length, padded.strides[0])
    )
    mse = np.mean(frames**2, axis=1)
    db = 10.0 * np.log10(np.maximum(mse, 1e-10))
    db -= 10.0 * math.log10(max(float(mse.max()), 1e-10))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * hop_length), int(min(audio.size, (loud[-1] + 1) * hop_length))


def trim_silence(audio: np.ndarray, top_db: float = TRIM_TOP_DB) -> np.ndarray:
    """Cut leading and trailing silence (the reference's `trim_silence: true`, top_db 60)."""
    start, end = nonsilent_region(audio, top_db)
    return audio[start:end]


def write(
    path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16"
) -> None:
    """Write mono audio; the format follows the suffix (.wav, .flac, .ogg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype=subtype)
