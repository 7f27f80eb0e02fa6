"""Voice transformation: turn every training utterance of a synthetic corpus into a speaker of its own.

Why: with 14 training voices the model learns the voices, not speech (docs/experiments.md,
"Conclusions"). This command derives a new corpus from a rendered one in which
each training utterance is changed by its own seeded draw, so no two training utterances share a
voice, a room or a microphone exactly. Dev and test are linked unchanged: the test split stays
"clean voices never trained on", byte for byte the source's, so error rates compare across corpora.

Levers (`--levers`; each a pure function of the audio and a parameter draw, measurable alone):
  world    WORLD vocoder analysis and resynthesis (PyPI `pyworld`): the F0 contour moved by
           -6..+6 semitones and its range scaled 0.6-1.4x, the spectral envelope warped in
           frequency by 0.86-1.16 (a shorter or longer vocal tract: formants move, pitch does not)
  room     a simulated room impulse response (PyPI `pyroomacoustics`, image-source shoebox:
           3x3x2.4 to 10x8x4 m, RT60 0.15-0.8 s, source and microphone anywhere 0.5 m from the
           walls) on 60% of the utterances
  channel  what a microphone and a line do: 1-3 peaking EQ bands (100 Hz-6 kHz, +-8 dB), a
           high-pass at 50-300 Hz, a low-pass at 3.4-7.5 kHz on half of them, 8 kHz mu-law
           (telephone) on a quarter, and coloured noise (spectral slope 0-2: white to brown) at
           5-30 dB SNR
Applied in that order (voice, then room, then channel), each with the corpus seed and the
utterance's id, so the corpus is the same on every run and for any --workers.

Output under --out: the source's layout, manifests (`synth-<split>.json`, durations re-read for
train) and transcripts, and `voices.json` with a `transform` entry (levers, seed, source). A
re-run skips finished files; a different source, seed or lever set in the same --out is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jasper import audio
from jasper.data import flac_info, write_manifest
from jasper.faults import Skipped

SAMPLE_RATE = audio.SAMPLE_RATE
LEVERS = ("world", "room", "channel")
SPLITS = ("train", "dev", "test")  # those of `jasper data synth`
SETUP_HINT = "pip install -e '.[transform]' (pyworld, pyroomacoustics, scipy)"

# world
F0_SEMITONES = (-6.0, 6.0)
F0_RANGE = (0.6, 1.4)  # scale of the log-F0 contour around its mean: flatter .. livelier
ENVELOPE_WARP = (0.86, 1.16)  # > 1: formants up (shorter vocal tract)
FRAME_PERIOD_MS = 5.0
# room
ROOM_SHARE = 0.6
ROOM_MIN_M, ROOM_MAX_M = (3.0, 3.0, 2.4), (10.0, 8.0, 4.0)
RT60_S = (0.15, 0.8)
WALL_GAP_M = 0.5
MAX_ORDER = 30  # reflections per path: 11 ms a response; uncapped, the longest rooms take 0.8 s
# channel
EQ_BANDS = (1, 3)
EQ_HZ = (100.0, 6000.0)
EQ_DB = (-8.0, 8.0)
EQ_Q = (0.5, 2.0)
HIGHPASS_HZ = (50.0, 300.0)
LOWPASS_SHARE, LOWPASS_HZ = 0.5, (3400.0, 7500.0)
PHONE_SHARE = 0.25
NOISE_SLOPE = (0.0, 2.0)  # power falls as 1/f**slope
SNR_DB = (5.0, 30.0)


class TransformError(RuntimeError):
    """A problem that stops the whole run (a missing package, a bad source, a mismatched --out)."""


def missing() -> str | None:
    """Why the levers cannot run here, or None when their packages are installed."""
    import importlib.util

    absent = [m for m in ("pyworld", "pyroomacoustics", "scipy") if importlib.util.find_spec(m) is None]
    return f"{', '.join(absent)} not installed ({SETUP_HINT})" if absent else None


# ----------------------------------------------------------------------------------------------
# The levers: pure functions of the audio and their parameters.


def warp_envelope(envelope: np.ndarray, factor: float) -> np.ndarray:
    """Move the spectral envelope's features up (`factor` > 1) or down in frequency.

    `envelope` is [frames, bins] of power from 0 to Nyquist; output bin k takes the (log-domain,
    linearly interpolated) value at k / factor, the edge value past the top.
    """
    bins = envelope.shape[1]
    source = np.clip(np.arange(bins) / factor, 0, bins - 1)
    lo = np.floor(source).astype(int)
    hi = np.minimum(lo + 1, bins - 1)
    w = source - lo
    log_env = np.log(np.maximum(envelope, 1e-16))
    return np.ascontiguousarray(np.exp(log_env[:, lo] * (1 - w) + log_env[:, hi] * w))


def world_voice(speech: np.ndarray, semitones: float, f0_range: float, warp: float) -> np.ndarray:
    """Resynthesise `speech` with WORLD: F0 shifted and its contour scaled, envelope warped."""
    import pyworld

    x = speech.astype(np.float64)
    f0, times = pyworld.dio(x, SAMPLE_RATE, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, times, SAMPLE_RATE)
    envelope = pyworld.cheaptrick(x, f0, times, SAMPLE_RATE)
    aperiodicity = pyworld.d4c(x, f0, times, SAMPLE_RATE)
    voiced = f0 > 0
    if voiced.any():
        log_f0 = np.log(f0[voiced])
        centre = log_f0.mean()
        f0[voiced] = np.exp(centre + (log_f0 - centre) * f0_range) * 2 ** (semitones / 12)
    out = pyworld.synthesize(
        f0, warp_envelope(envelope, warp), aperiodicity, SAMPLE_RATE, frame_period=FRAME_PERIOD_MS
    )
    return fit_length(out, speech.size).astype(np.float32)


def room_response(rng: np.random.Generator) -> np.ndarray:
    """A room impulse response at 16 kHz: a random shoebox, RT60, source and microphone."""
    import pyroomacoustics as pra

    size = rng.uniform(ROOM_MIN_M, ROOM_MAX_M)
    rt60 = rng.uniform(*RT60_S)
    absorption, order = pra.inverse_sabine(rt60, size)
    room = pra.ShoeBox(
        size, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(order, MAX_ORDER)
    )
    room.add_source(rng.uniform(WALL_GAP_M, size - WALL_GAP_M))
    room.add_microphone(rng.uniform(WALL_GAP_M, size - WALL_GAP_M))
    room.compute_rir()
    return np.asarray(room.rir[0][0], dtype=np.float64)


def reverberate(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`speech` played in the room of `rir`, aligned to the direct sound, cut to the input's length."""
    from scipy.signal import fftconvolve

    onset = int(np.argmax(np.abs(rir)))
    wet = fftconvolve(speech.astype(np.float64), rir[onset:])[: speech.size]
    return rescale(wet, speech)


def peaking_eq(freq: float, gain_db: float, q: float) -> np.ndarray:
    """One peaking biquad (the Audio EQ Cookbook's) as second-order sections."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / SAMPLE_RATE
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def coloured_noise(size: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls as 1/f**slope (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size)
    freqs[0] = freqs[1] if size > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (slope / 2), n=size)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def mu_law_phone(speech: np.ndarray) -> np.ndarray:
    """A telephone line: 8 kHz, 8-bit mu-law, back to 16 kHz."""
    narrow = audio.resample(speech.astype(np.float32), SAMPLE_RATE, 8000).astype(np.float64)
    peak = max(float(np.abs(narrow).max()), 1e-9)
    x = narrow / peak
    mu = 255.0
    coded = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127) / 127
    decoded = np.sign(coded) * ((1 + mu) ** np.abs(coded) - 1) / mu * peak
    return fit_length(audio.resample(decoded.astype(np.float32), 8000, SAMPLE_RATE), speech.size)


def channel(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """EQ, band limits, maybe a phone line, then coloured noise at a random SNR."""
    from scipy.signal import butter, sosfilt

    x = speech.astype(np.float64)
    bands = [
        peaking_eq(np.exp(rng.uniform(*np.log(EQ_HZ))), rng.uniform(*EQ_DB), rng.uniform(*EQ_Q))
        for _ in range(int(rng.integers(EQ_BANDS[0], EQ_BANDS[1] + 1)))
    ]
    sections = [*bands, butter(2, rng.uniform(*HIGHPASS_HZ), "highpass", fs=SAMPLE_RATE, output="sos")]
    lowpass_hz = rng.uniform(*LOWPASS_HZ)
    if rng.random() < LOWPASS_SHARE:
        sections.append(butter(4, lowpass_hz, "lowpass", fs=SAMPLE_RATE, output="sos"))
    y = sosfilt(np.concatenate(sections), x)
    phone = rng.random() < PHONE_SHARE
    if phone:
        y = mu_law_phone(y)
    slope, snr_db = rng.uniform(*NOISE_SLOPE), rng.uniform(*SNR_DB)
    signal_rms = float(np.sqrt(np.mean(y**2)))
    y = y + coloured_noise(y.size, slope, rng) * signal_rms * 10 ** (-snr_db / 20)
    return rescale(y, speech)


def fit_length(x: np.ndarray, size: int) -> np.ndarray:
    """`x` cut or zero-padded to `size` samples."""
    return x[:size] if x.size >= size else np.pad(x, (0, size - x.size))


def rescale(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    """`y` as float32 with the peak level of `like` (the corpus levelled its peaks)."""
    peak = float(np.abs(y).max(initial=0.0))
    target = float(np.abs(like).max(initial=0.0))
    return (y * (target / peak if peak > 0 else 0.0)).astype(np.float32)


def utterance_rng(seed: int, uid: str) -> np.random.Generator:
    """One generator per utterance, from the corpus seed and its id: independent of order and workers."""
    return np.random.default_rng([seed, zlib.crc32(uid.encode())])


def transform(speech: np.ndarray, levers: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """Apply `levers` to one utterance. Every draw is made whatever the levers, so a lever's
    parameters for an utterance are the same alone or combined with the others."""
    semitones, f0_range, warp = (
        rng.uniform(*F0_SEMITONES),
        rng.uniform(*F0_RANGE),
        rng.uniform(*ENVELOPE_WARP),
    )
    in_room = rng.random() < ROOM_SHARE
    room_rng, channel_rng = (np.random.default_rng(s) for s in rng.integers(2**63, size=2))
    if "world" in levers:
        speech = world_voice(speech, semitones, f0_range, warp)
    if "room" in levers and in_room:
        speech = reverberate(speech, room_response(room_rng))
    if "channel" in levers:
        speech = channel(speech, channel_rng)
    return speech


# ----------------------------------------------------------------------------------------------
# The derived corpus.


@dataclass(frozen=True)
class TransformOptions:
    """Settings of `jasper data transform`; the CLI flags have the same names and defaults."""

    source: Path
    out: Path
    levers: tuple[str, ...] = LEVERS
    seed: int = 1
    workers: int = os.cpu_count() or 1


@dataclass
class Summary:
    """The outcome of a run, for the printed report."""

    utterances: dict[str, int] = field(default_factory=dict)
    transformed_s: float = 0.0  # audio seconds transformed in this run (not cached)
    worker_s: float = 0.0
    wall_s: float = 0.0


def transform_file(src: Path, dest: Path, levers: tuple[str, ...], seed: int, uid: str) -> tuple[dict, float]:
    """Write the transformed `src` to `dest` unless it is there; its manifest info and worker time."""
    start = time.perf_counter()
    if not dest.is_file():
        speech = audio.load(src, SAMPLE_RATE)
        out = transform(speech, levers, utterance_rng(seed, uid))
        partial = dest.with_name(f"{uid}.partial.flac")
        audio.write(partial, out)
        partial.replace(dest)
        return flac_info(dest), time.perf_counter() - start
    return flac_info(dest), 0.0


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link `src` to `dest` (copy across file systems); an existing `dest` is kept."""
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def read_source(source: Path) -> tuple[dict, dict[str, list[dict]]]:
    """The source corpus's voices.json and manifests, with errors naming the missing file."""
    voices = source / "voices.json"
    if not voices.is_file():
        raise TransformError(f"{voices}: not found; --source must be a corpus of `jasper data synth`")
    manifests = {}
    for split in SPLITS:
        path = source / f"synth-{split}.json"
        if not path.is_file():
            raise TransformError(f"{path}: not found; render the source corpus first")
        manifests[split] = json.loads(path.read_text(encoding="utf-8"))
    return json.loads(voices.read_text(encoding="utf-8")), manifests


def check_out(out: Path, record: dict) -> None:
    """Refuse to mix corpora: an existing --out must come from the same source, seed and levers."""
    path = out / "voices.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8")).get("transform")
        if old != record["transform"]:
            raise TransformError(
                f"{out} holds a corpus made with other settings ({old}); use another --out or delete it"
            )


def transform_corpus(opts: TransformOptions, skipped: Skipped | None = None) -> Summary:
    """Write the derived corpus of `opts` and its manifests; failed files go to `skipped`."""
    skipped = skipped or Skipped("data transform")
    unknown = sorted(set(opts.levers) - set(LEVERS))
    if unknown:
        raise TransformError(f"unknown lever(s) {', '.join(unknown)}; choose from {', '.join(LEVERS)}")
    if opts.levers and (reason := missing()):
        raise TransformError(reason)
    source, out = opts.source.resolve(), opts.out.resolve()
    if source == out:
        raise TransformError("--out must differ from --source")
    voices, manifests = read_source(source)
    record = {
        **voices,
        "transform": {"levers": list(opts.levers), "seed": opts.seed, "source": str(source)},
    }
    check_out(out, record)
    out.mkdir(parents=True, exist_ok=True)
    (out / "voices.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    for trans in source.rglob("*.trans.txt"):
        link_or_copy(trans, out / trans.relative_to(source))
    summary = Summary()
    start = time.perf_counter()
    for split in ("dev", "test"):
        for entry in manifests[split]:
            for f in entry["files"]:
                link_or_copy(source / f["fname"], out / f["fname"])
        write_manifest(manifests[split], out / f"synth-{split}.json")
        summary.utterances[split] = len(manifests[split])
    kept = _transform_train(manifests["train"], source, out, opts, summary, skipped)
    write_manifest(kept, out / "synth-train.json")
    summary.utterances["train"] = len(kept)
    summary.wall_s = time.perf_counter() - start
    return summary


def _transform_train(
    entries: list[dict], source: Path, out: Path, opts: TransformOptions, summary: Summary, skipped: Skipped
) -> list[dict]:
    """Transform the training files in parallel; their manifest entries with the new file info."""
    total = sum(e["original_duration"] for e in entries)
    kept: list[dict] = []
    bar_format = (
        "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}{postfix}]"
    )
    with (
        ProcessPoolExecutor(max(1, opts.workers)) as pool,
        tqdm(total=total, desc="transform", bar_format=bar_format, dynamic_ncols=True) as bar,
    ):
        jobs = []
        for entry in entries:
            fname = entry["files"][0]["fname"]
            (out / fname).parent.mkdir(parents=True, exist_ok=True)
            uid = Path(fname).name.split(".")[0]
            jobs.append(
                (
                    entry,
                    fname,
                    pool.submit(transform_file, source / fname, out / fname, opts.levers, opts.seed, uid),
                )
            )
        for entry, fname, job in jobs:
            try:
                info, seconds = job.result()
            except Exception as e:  # one bad file costs that file
                skipped.add(source / fname, e)
                continue
            kept.append(
                {
                    **entry,
                    "files": [{**info, "fname": fname, "speed": 1}],
                    "original_duration": info["duration"],
                    "original_num_samples": info["num_samples"],
                }
            )
            if seconds:
                summary.transformed_s += info["duration"]
                summary.worker_s += seconds
            bar.update(entry["original_duration"])
    return kept


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TransformOptions(source=Path(), out=Path())
    parser.add_argument("--source", type=Path, required=True, help="a corpus of `jasper data synth`")
    parser.add_argument("--out", type=Path, required=True, help="the derived corpus (created)")
    parser.add_argument(
        "--levers",
        nargs="+",
        choices=LEVERS,
        default=list(defaults.levers),
        help="what to change in each training utterance (default: all): world (pitch, pitch range "
        "and formants), room (a simulated room on 60%%), channel (EQ, band limits, phone line, noise)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="decides every draw (default 1)")
    parser.add_argument(
        "--workers", type=int, default=defaults.workers, help="parallel processes (default: CPU count)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first file that fails (default: skip it, exit 3)"
    )


def run(args: argparse.Namespace) -> int:
    if args.workers < 1 or args.seed < 0:
        print("error: --workers must be >= 1 and --seed >= 0", file=sys.stderr)
        return 1
    opts = TransformOptions(
        source=args.source,
        out=args.out,
        levers=tuple(dict.fromkeys(args.levers)),
        seed=args.seed,
        workers=args.workers,
    )
    skipped = Skipped("data transform", strict=args.strict)
    try:
        summary = transform_corpus(opts, skipped)
    except TransformError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished files are kept; run the same command again to resume", file=sys.stderr)
        return 130
    for split in SPLITS:
        print(f"{opts.out / f'synth-{split}.json'}: {summary.utterances[split]} utterances")
    rate = summary.transformed_s / summary.worker_s if summary.worker_s else 0.0
    print(
        f"transformed {summary.transformed_s / 3600:.3f} h of training audio in {summary.wall_s:.1f} s "
        f"({rate:.1f} audio-s per worker-s, {opts.workers} workers; levers: {' '.join(opts.levers)})"
    )
    return skipped.finish(summary.utterances["train"], "utterances")
