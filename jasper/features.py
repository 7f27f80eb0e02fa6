"""Log-mel filterbank features, SpecAugment and Cutout, numerically equal to the reference.

The math follows NVIDIA's PyTorch `FilterbankFeatures` step for step (pre-emphasis, centred STFT
with a symmetric Hann window, Slaney mel, natural log, per-utterance normalisation with the
unbiased std, masking, padding to a multiple of `pad_align`), so that published checkpoints see
the features they were trained on. What differs is how it runs: the whole batch at once with no
Python loop over utterances, the caller's audio is never modified, dither is off in eval mode
(so evaluation is deterministic), and audio shorter than the STFT window no longer crashes.

One training augmentation is ours, not the reference's: vocal tract length perturbation (`vtlp`),
which no reference config sets and which is off unless a config asks for it.

NeMo's models were trained on NeMo's variant of the same front end, chosen by two keys:
`log_zero_guard_value` (NeMo adds 2^-24 before the log, the reference 1e-20) and `frontend`.
`reference` is the framing of DeepLearningExamples and of NeMo before 2.5: a centred STFT with
reflect padding and ceil(L / hop) valid frames. `nemo-2.5` is NeMo's since 2.5: constant (zero)
padding, (L + 2 * (n_fft // 2) - n_fft) // hop valid frames (one fewer unless L is a multiple of
the hop), and pre-emphasis zeroed past each utterance's end.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOG_GUARD = 1e-20
FRONTENDS = ("reference", "nemo-2.5")
STD_GUARD = 1e-5
# Rows of audio processed together on a CPU: enough to vectorise, few enough to stay in cache.
CPU_CHUNK_SAMPLES = 600_000

WINDOWS = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "bartlett": torch.bartlett_window,
    "none": None,
}


def hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, `htk=False`): linear below 1 kHz, log above."""
    freq = np.asanyarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    log_region = freq >= min_log_hz
    mels[log_region] = min_log_mel + np.log(freq[log_region] / min_log_hz) / logstep
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    mels = np.asanyarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    log_region = mels >= min_log_mel
    freqs[log_region] = min_log_hz * np.exp(logstep * (mels[log_region] - min_log_mel))
    return freqs


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-normalised triangular mel filters `[n_mels, n_fft//2+1]`, float32.

    Equal to `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)` (including its float32 rounding
    before the area normalisation), so we need no librosa dependency.
    """
    fft_freqs = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(np.array([fmin]))[0], hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)).astype(np.float32)
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    return (weights * enorm[:, None]).astype(np.float32)


VTLP_STEPS = 21  # warp factors drawn from, evenly spaced over [min_warp, max_warp]
VTLP_BOUNDARY_HZ = 4800.0  # Jaitly & Hinton's: below it the warp is a plain scaling (at most 0.8 x Nyquist)


def vtlp_warp(freqs: np.ndarray, warp: float, nyquist: float) -> np.ndarray:
    """Jaitly & Hinton's (2013) piecewise-linear frequency warp: `warp * f` up to a boundary, then a
    straight line to (nyquist, nyquist), so [0, nyquist] maps onto itself and the warp is continuous.

    The boundary is 4.8 kHz (at most 0.8 x Nyquist), scaled so that the bend stays below Nyquist.
    """
    cut = min(VTLP_BOUNDARY_HZ, 0.8 * nyquist) * min(warp, 1.0) / warp
    slope = (nyquist - warp * cut) / (nyquist - cut)
    return np.where(freqs <= cut, warp * freqs, nyquist - slope * (nyquist - freqs))


def warped_filterbanks(fb: np.ndarray, sample_rate: int, warps: np.ndarray) -> np.ndarray:
    """`fb` read at vocal-tract-warped frequencies: one bank per warp factor, `[K, n_mels, n_bins]`.

    A speaker whose vocal tract is shorter by a factor `a` has formants higher by about `a`. Warped
    filter m responds at frequency f as filter m of `fb` does at `vtlp_warp(f, a)`, so no band is
    lost or invented. A warp of 1 returns `fb` (up to the rounding of the bin frequencies).
    """
    nyquist = sample_rate / 2
    freqs = np.linspace(0, nyquist, fb.shape[1])
    banks = []
    for a in np.asarray(warps, dtype=np.float64):
        w = vtlp_warp(freqs, float(a), nyquist)
        banks.append(np.stack([np.interp(w, freqs, row) for row in fb]))
    return np.stack(banks).astype(np.float32)


def feature_lengths(
    audio_lens: torch.Tensor, hop_length: int, frontend: str = "reference", n_fft: int = 0
) -> torch.Tensor:
    """Valid frames per utterance as int32: `ceil(L / hop)` (the reference's float32 ceil), or
    NeMo 2.5's `(L + 2 * (n_fft // 2) - n_fft) // hop` for `frontend="nemo-2.5"`."""
    if frontend == "nemo-2.5":
        return torch.div(audio_lens.long() + 2 * (n_fft // 2) - n_fft, hop_length, rounding_mode="floor").to(
            torch.int32
        )
    return torch.ceil(audio_lens.to(torch.float32) / hop_length).to(torch.int32)


def max_frames(max_duration: float, sample_rate: int, win_length: int, hop_length: int) -> int:
    """The reference's `max_len` for `pad_to_max_duration` (2 frames short; align-16 hides it)."""
    return 1 + math.ceil((max_duration * sample_rate - win_length) / hop_length)


def padded_frames(num_frames: int, pad_align: int, min_frames: int = 0) -> int:
    """Frames after padding: at least `min_frames`, rounded up to a multiple of `pad_align`."""
    size = max(num_frames, min_frames)
    if pad_align > 0 and size % pad_align:
        size += pad_align - size % pad_align
    return size


def zero_past(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`x` `[B, ..., T]` with every position at or beyond each row's length set to 0."""
    beyond = torch.arange(x.shape[-1], device=x.device) >= lengths.to(x.device)[:, None]
    return x.masked_fill(beyond.view(x.shape[0], *[1] * (x.dim() - 2), x.shape[-1]), 0)


def normalize_batch(x: torch.Tensor, lengths: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-utterance mean/std normalisation over each utterance's valid frames only.

    `per_feature`: one mean and unbiased std per mel bin; `all_features`: one per utterance. The
    std gets +1e-5 as in the reference. An utterance of one frame gets std 1e-5 instead of the
    reference's NaN (its features become 0).
    """
    if mode not in ("per_feature", "all_features"):
        return x
    valid = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    valid = valid[:, None, :]
    n = lengths.to(x.dtype).clamp(min=1)
    if mode == "per_feature":
        n = n[:, None]
        mean = (x * valid).sum(-1) / n
        var = (((x - mean[..., None]) * valid) ** 2).sum(-1) / (n - 1).clamp(min=1)
        std = var.sqrt() + STD_GUARD
        return (x - mean[..., None]) / std[..., None]
    n = n * x.shape[1]
    mean = (x * valid).sum((1, 2)) / n
    var = (((x - mean[:, None, None]) * valid) ** 2).sum((1, 2)) / (n - 1).clamp(min=1)
    std = var.sqrt() + STD_GUARD
    return (x - mean[:, None, None]) / std[:, None, None]


def _interval_mask(starts: torch.Tensor, widths: torch.Tensor, size: int) -> torch.Tensor:
    """`[B, size]` bool: True where any of the `[B, n]` intervals `[start, start+width)` covers."""
    pos = torch.arange(size, device=starts.device)[None, None, :]
    covered = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])
    return covered.any(dim=1)


class SpecAugment(nn.Module):
    """Frequency and time masks (zeros) with the reference's sampling ranges, vectorised.

    Per utterance and mask: width uniform in [min, max] inclusive, start uniform in
    [0, max(1, size - width) - 1]. Time masks use the padded length, as in the reference.
    """

    def __init__(
        self,
        freq_masks: int = 0,
        min_freq: int = 0,
        max_freq: int = 10,
        time_masks: int = 0,
        min_time: int = 0,
        max_time: int = 10,
    ) -> None:
        super().__init__()
        if not (0 <= min_freq <= max_freq and 0 <= min_time <= max_time):
            raise ValueError("SpecAugment needs 0 <= min <= max for both axes")
        self.freq_masks, self.min_freq, self.max_freq = freq_masks, min_freq, max_freq
        self.time_masks, self.min_time, self.max_time = time_masks, min_time, max_time

    @staticmethod
    def _sample(batch: int, count: int, lo: int, hi: int, size: int, device: torch.device):
        widths = torch.randint(lo, hi + 1, (batch, count), device=device)
        upper = (size - widths).clamp(min=1)
        starts = (torch.rand(batch, count, device=device) * upper).long()
        return starts, widths

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_freq, n_time = x.shape
        mask = torch.zeros(batch, n_freq, n_time, dtype=torch.bool, device=x.device)
        if self.freq_masks:
            f = _interval_mask(
                *self._sample(batch, self.freq_masks, self.min_freq, self.max_freq, n_freq, x.device), n_freq
            )
            mask |= f[:, :, None]
        if self.time_masks:
            t = _interval_mask(
                *self._sample(batch, self.time_masks, self.min_time, self.max_time, n_time, x.device), n_time
            )
            mask |= t[:, None, :]
        return x.masked_fill(mask, 0)


class CutoutAugment(nn.Module):
    """Zeroed rectangles (frequency width in [min_freq, max_freq], time height in [min_time, max_time])."""

    def __init__(
        self, masks: int = 0, min_freq: int = 20, max_freq: int = 20, min_time: int = 5, max_time: int = 5
    ) -> None:
        super().__init__()
        self.masks, self.min_freq, self.max_freq = masks, min_freq, max_freq
        self.min_time, self.max_time = min_time, max_time

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.masks:
            return x
        batch, n_freq, n_time = x.shape
        shape, dev = (batch, self.masks), x.device
        w = torch.randint(self.min_freq, self.max_freq + 1, shape, device=dev)
        h = torch.randint(self.min_time, self.max_time + 1, shape, device=dev)
        f0 = (torch.rand(shape, device=dev) * (n_freq - w).clamp(min=0)).long()
        t0 = (torch.rand(shape, device=dev) * (n_time - h).clamp(min=0)).long()
        fpos = torch.arange(n_freq, device=dev)[None, None, :]
        tpos = torch.arange(n_time, device=dev)[None, None, :]
        in_f = (fpos >= f0[..., None]) & (fpos < (f0 + w)[..., None])  # [B, M, F]
        in_t = (tpos >= t0[..., None]) & (tpos < (t0 + h)[..., None])  # [B, M, T]
        mask = (in_f[..., :, None] & in_t[..., None, :]).any(dim=1)
        return x.masked_fill(mask, 0)


class FilterbankFeatures(nn.Module):
    """Audio `[B, L]` + lengths -> normalised log-mel features `[B, n_filt, T]` + frame lengths.

    Built from the keywords of a config's `filterbank_features` section. Augmentation runs only in
    training mode; dither too, unless `dither_in_eval=True` reproduces the reference's eval-time
    dither. `vtlp={"min_warp": a, "max_warp": b}` gives each training utterance a mel filterbank
    warped by a factor drawn from `VTLP_STEPS` evenly spaced values in [a, b]
    (`warped_filterbanks`): a new speaker for the price of a batched matrix product.
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        window_size: float = 0.02,
        window_stride: float = 0.01,
        window: str = "hamming",
        normalize: str = "per_feature",
        n_fft: int | None = None,
        preemph: float | None = 0.97,
        n_filt: int = 64,
        lowfreq: float = 0,
        highfreq: float | None = None,
        log: bool = True,
        dither: float = 1e-5,
        pad_align: int = 8,
        pad_to_max_duration: bool = False,
        max_duration: float = math.inf,
        frame_splicing: int = 1,
        spec_augment: dict | None = None,
        cutout_augment: dict | None = None,
        vtlp: dict | None = None,
        dither_in_eval: bool = False,
        log_zero_guard_value: float = LOG_GUARD,
        frontend: str = "reference",
    ) -> None:
        super().__init__()
        if frontend not in FRONTENDS:
            raise ValueError(f"frontend {frontend!r} is not one of {', '.join(FRONTENDS)}")
        if frame_splicing != 1:
            raise ValueError("frame_splicing > 1 is not supported (nor is it by the reference)")
        if window not in WINDOWS:
            raise ValueError(f"window {window!r} is not one of {sorted(WINDOWS)}")
        self.sample_rate = sample_rate
        self.win_length = int(sample_rate * window_size)
        self.hop_length = int(sample_rate * window_stride)
        self.n_fft = n_fft or 2 ** math.ceil(math.log2(self.win_length))
        self.normalize, self.preemph, self.log = normalize, preemph, log
        self.dither, self.dither_in_eval = dither, dither_in_eval
        self.log_zero_guard_value, self.frontend = float(log_zero_guard_value), frontend
        self.pad_align, self.n_filt = pad_align, n_filt
        self.max_len = (
            max_frames(max_duration, sample_rate, self.win_length, self.hop_length)
            if pad_to_max_duration
            else 0
        )
        window_fn = WINDOWS[window]
        win = window_fn(self.win_length, periodic=False) if window_fn else None
        self.register_buffer("window", win, persistent=False)
        fb = mel_filterbank(sample_rate, self.n_fft, n_filt, lowfreq, highfreq or sample_rate / 2)
        self.register_buffer("fb", torch.from_numpy(fb), persistent=False)
        banks = None
        if vtlp:
            if set(vtlp) != {"min_warp", "max_warp"}:
                raise ValueError(f"vtlp takes min_warp and max_warp, got {sorted(vtlp)}")
            low, high = vtlp["min_warp"], vtlp["max_warp"]
            if not 0 < low <= high:
                raise ValueError(f"vtlp needs 0 < min_warp <= max_warp, got {low}, {high}")
            banks = torch.from_numpy(warped_filterbanks(fb, sample_rate, np.linspace(low, high, VTLP_STEPS)))
        self.register_buffer("warped_fb", banks, persistent=False)
        self.spec_augment = SpecAugment(**spec_augment) if spec_augment else None
        self.cutout_augment = CutoutAugment(**cutout_augment) if cutout_augment else None

    def valid_frames(self, audio_lens: torch.Tensor) -> torch.Tensor:
        """Valid frames per utterance (int32) under this front end's rule."""
        return feature_lengths(audio_lens, self.hop_length, self.frontend, self.n_fft)

    def output_frames(self, num_samples: int) -> int:
        """Padded time size of the feature tensor for a batch whose longest audio is `num_samples`."""
        return padded_frames(1 + num_samples // self.hop_length, self.pad_align, self.max_len)

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        in_dtype = audio.dtype
        x = audio.float()
        lengths = self.valid_frames(audio_lens)
        if self.dither > 0 and (self.training or self.dither_in_eval):
            x = x + self.dither * torch.randn_like(x)

        if x.device.type == "cpu" and x.shape[0] > 1:
            # On a CPU the batch's STFT intermediates overflow the caches; a few rows at a time is
            # 3x faster and gives identical numbers (every row keeps the batch's padded width).
            rows = max(1, CPU_CHUNK_SAMPLES // max(x.shape[1], 1))
            x = torch.cat(
                [
                    self._log_mel(x[i : i + rows], lengths[i : i + rows], audio_lens[i : i + rows])
                    for i in range(0, len(x), rows)
                ]
            )
        else:
            x = self._log_mel(x, lengths, audio_lens)
        size = padded_frames(x.shape[-1], self.pad_align, self.max_len)
        x = F.pad(x, (0, size - x.shape[-1]))
        if self.training:
            if self.cutout_augment is not None:
                x = self.cutout_augment(x)
            if self.spec_augment is not None:
                x = self.spec_augment(x)
        return x.to(in_dtype), lengths

    def _log_mel(
        self, x: torch.Tensor, lengths: torch.Tensor, audio_lens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pre-emphasis, STFT power, mel, log, normalisation and masking of a float32 batch."""
        if self.preemph is not None:
            x = torch.cat([x[:, :1], x[:, 1:] - self.preemph * x[:, :-1]], dim=1)
            if self.frontend == "nemo-2.5" and audio_lens is not None:  # NeMo zeroes it past each end
                x = zero_past(x, audio_lens)
        num_frames = 1 + x.shape[1] // self.hop_length
        min_samples = self.n_fft // 2 + 1  # reflect padding needs more samples than half the FFT
        if x.shape[1] < min_samples:
            x = F.pad(x, (0, min_samples - x.shape[1]))
        with torch.autocast(x.device.type, enabled=False):
            spec = torch.stft(
                x,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.window,
                center=True,
                pad_mode="constant" if self.frontend == "nemo-2.5" else "reflect",
                return_complex=True,
            )[..., :num_frames]
            power = torch.view_as_real(spec).pow(2).sum(-1)
            if self.training and self.warped_fb is not None:
                pick = torch.randint(len(self.warped_fb), (power.shape[0],), device=power.device)
                x = torch.bmm(self.warped_fb[pick], power)
            else:
                x = torch.matmul(self.fb, power)
            if self.log:
                x = torch.log(x + self.log_zero_guard_value)
            x = normalize_batch(x, lengths, self.normalize)
        return zero_past(x, lengths)
