"""Convert a LibriSpeech subset to 16-bit WAV (optionally speed-perturbed) and write its manifest.

The output is what the reference's convert_librispeech.py writes (spec 2.1), so the reference's
configs and data layout work unchanged: `<dest>/<spk>/<chap>/<id>.wav` plus `<id>-<speed>.wav` per
extra speed, and a JSON array with one entry per utterance. Each entry has the keys `transcript`,
`files` (the original last, as the reference's `--speed 0.9 1.1` gives), `original_duration` and
`original_num_samples`. Each `fname` is relative to the parent of `--dest_dir`, the dataset root
that training is pointed at.

Where this differs on purpose: soundfile + soxr (jasper.audio) do the work of sox, so sox is not
needed. Entries are sorted by utterance id. A WAV is written under a temporary name and renamed,
so a re-run can trust and skip any WAV it finds. A missing or corrupt FLAC is reported by path on
stderr, the other utterances are still converted, and the exit code is 3 (`jasper.faults`); the
manifest is written atomically and holds the good utterances. `--strict` stops at the first bad
utterance instead, writing no manifest (exit code 2). Exit code 1 means there was nothing to convert.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from jasper import audio
from jasper.data import write_manifest
from jasper.faults import Skipped

BITDEPTH = 16  # audio.write's PCM_16


@dataclass(frozen=True)
class Utterance:
    uid: str
    transcript: str
    flac: Path
    rel_dir: Path  # speaker/chapter, relative to the input directory
    source: str  # "<trans.txt>:<line>", for error messages


@dataclass(frozen=True)
class PrepareOptions:
    input_dir: Path
    dest_dir: Path
    output_json: Path | None = None  # None: <dest parent>/librispeech-<dest name>.json
    speeds: tuple[float, ...] = ()
    target_sr: int = audio.SAMPLE_RATE
    overwrite: bool = False
    parallel: int = os.cpu_count() or 1

    @property
    def dest(self) -> Path:
        """`dest_dir` made absolute (symlinks kept), so that "." has a name and a parent."""
        return Path(os.path.abspath(self.dest_dir))

    @property
    def manifest_path(self) -> Path:
        return self.output_json or self.dest.parent / f"librispeech-{self.dest.name}.json"


def speed_order(speeds: list[float] | tuple[float, ...]) -> list[float]:
    """The extra speeds in the order given (duplicates and 1 dropped), then 1: the original is last."""
    extra: list[float] = []
    for s in speeds:
        if s <= 0:
            raise ValueError(f"speed must be positive, got {s}")
        if s != 1 and s not in extra:
            extra.append(s)
    return [*extra, 1]


def wav_name(uid: str, speed: float) -> str:
    """`<id>.wav` for the original, `<id>-<speed>.wav` (Python's str of the float) otherwise."""
    return f"{uid}.wav" if speed == 1 else f"{uid}-{speed}.wav"


def find_utterances(input_dir: Path) -> tuple[list[Utterance], list[str]]:
    """Every line of every `*.trans.txt` under `input_dir`, and the malformed lines as errors."""
    utterances, errors = [], []
    for trans in sorted(input_dir.glob("**/*.trans.txt")):
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            if not text.strip():
                errors.append(f"{trans}:{number}: no transcript after the id {uid!r}")
                continue
            utterances.append(
                Utterance(
                    uid,
                    text.strip().lower(),
                    trans.parent / f"{uid}.flac",
                    trans.parent.relative_to(input_dir),
                    f"{trans}:{number}",
                )
            )
    return utterances, errors


def wav_info(path: Path) -> dict:
    """The sox `file_info` fields the reference stores per file, read from a written WAV."""
    try:
        with sf.SoundFile(str(path)) as f:
            rate, channels, frames, subtype = f.samplerate, f.channels, f.frames, f.subtype
            samples = f.read(dtype="int16")
    except (RuntimeError, sf.LibsndfileError) as e:
        raise audio.AudioError(f"{path}: unreadable WAV ({e}); delete it or use --overwrite") from None
    if subtype != "PCM_16":
        raise audio.AudioError(f"{path}: {subtype} WAV, expected 16-bit PCM; delete it or use --overwrite")
    return {
        "channels": channels,
        "sample_rate": float(rate),
        "bitdepth": BITDEPTH,
        "bitrate": float(rate * channels * BITDEPTH),
        "duration": frames / rate,
        "num_samples": frames,
        "encoding": "Signed Integer PCM",
        "silent": not np.any(samples),
    }


def convert(utt: Utterance, opts: PrepareOptions) -> tuple[str, dict | str]:
    """Write the WAVs of one utterance (those not already there) and return its manifest entry.

    Returns `(uid, entry)`, or `(uid, message)` when the FLAC or a WAV is unusable; it runs in a
    worker, so problems come back as values, not exceptions.
    """
    out_dir = opts.dest / utt.rel_dir
    root = opts.dest.parent
    files, original = [], None
    try:
        for speed in speed_order(opts.speeds):
            wav = out_dir / wav_name(utt.uid, speed)
            if opts.overwrite or not wav.is_file():
                if original is None:
                    original = audio.load(utt.flac, opts.target_sr)
                tmp = wav.with_suffix(".partial.wav")
                audio.write(tmp, audio.speed_perturb(original, speed, opts.target_sr), opts.target_sr)
                tmp.replace(wav)
            info = wav_info(wav)
            files.append({**info, "fname": wav.relative_to(root).as_posix(), "speed": speed})
    except audio.AudioError as e:
        return utt.uid, f"{e} (listed at {utt.source})"
    except sf.LibsndfileError as e:  # writing failed
        return utt.uid, f"{out_dir / utt.uid}: cannot write WAV ({e})"
    last = files[-1]
    return utt.uid, {
        "transcript": utt.transcript,
        "files": files,
        "original_duration": last["duration"],
        "original_num_samples": last["num_samples"],
    }


def prepare(opts: PrepareOptions, strict: bool = False) -> tuple[list[dict], list[str]]:
    """Convert every utterance under `opts.input_dir`; returns the manifest entries (by id) and errors.

    With `strict`, conversion stops at the first error (the workers are terminated).
    """
    utterances, errors = find_utterances(opts.input_dir)
    if strict and errors:
        return [], errors[:1]
    work = partial(convert, opts=opts)
    bar = partial(tqdm, total=len(utterances), unit="utt", desc=f"prepare {opts.input_dir.name}")
    outcomes = []
    with Pool(opts.parallel) if opts.parallel > 1 and len(utterances) > 1 else _InProcess() as pool:
        for outcome in bar(pool.imap_unordered(work, utterances, chunksize=4)):
            outcomes.append(outcome)
            if strict and isinstance(outcome[1], str):
                return [], [outcome[1]]
    outcomes.sort(key=lambda pair: pair[0])
    errors += [outcome for _, outcome in outcomes if isinstance(outcome, str)]
    return [outcome for _, outcome in outcomes if isinstance(outcome, dict)], errors


class _InProcess:
    """`Pool`'s `imap_unordered` in this process, for one worker (no fork, tracebacks as they are)."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap_unordered(self, fn: Any, items: Any, chunksize: int = 1) -> Any:
        return map(fn, items)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input_dir",
        type=Path,
        required=True,
        help="a LibriSpeech subset (<spk>/<chap>/*.flac and *.trans.txt)",
    )
    parser.add_argument("--dest_dir", type=Path, required=True, help="where the WAVs go")
    parser.add_argument(
        "--output_json",
        type=Path,
        default=None,
        help="manifest path (default: <dest_dir parent>/librispeech-<dest_dir name>.json)",
    )
    parser.add_argument(
        "-s",
        "--speed",
        type=_positive_float,
        nargs="*",
        default=[],
        help="extra speeds for offline speed perturbation, e.g. 0.9 1.1",
    )
    parser.add_argument("--target_sr", type=int, default=audio.SAMPLE_RATE, help="output sample rate")
    parser.add_argument("--overwrite", action="store_true", help="rewrite WAVs that already exist")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first missing or unreadable FLAC and write no manifest (default: report it, "
        "leave it out of the manifest, go on, exit 3)",
    )


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"speed must be positive, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    opts = PrepareOptions(
        input_dir=args.input_dir,
        dest_dir=args.dest_dir,
        output_json=args.output_json,
        speeds=tuple(args.speed),
        target_sr=args.target_sr,
        overwrite=args.overwrite,
        parallel=args.parallel,
    )
    if not opts.input_dir.is_dir():
        print(f"error: {opts.input_dir}: no such directory", file=sys.stderr)
        return 1
    entries, errors = prepare(opts, strict=args.strict)
    if not entries and not errors:
        print(f"error: {opts.input_dir}: no *.trans.txt files, nothing to convert", file=sys.stderr)
        return 1
    skipped = Skipped("data prepare", strict=args.strict)
    for message in errors:  # each names its file (and the transcript line that lists it)
        skipped.add_message(message)
    write_manifest(entries, opts.manifest_path)
    hours = sum(e["original_duration"] for e in entries) / 3600
    print(f"{opts.manifest_path}: {len(entries)} utterances ({hours:.2f} h), WAVs under {opts.dest_dir}")
    return skipped.finish(len(entries), "utterances")
