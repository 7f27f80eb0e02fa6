"""Throughput of `jasper data prepare` (FLAC -> 16 kHz WAV + manifest) on the real mini LibriSpeech set.

Converts every subset of ../shared/data/librispeech-real-mini into a temporary directory and prints
WAV files written per second and seconds of audio written per second of wall time (pool start-up
and manifest writing included, as a user sees them):

    .venv/bin/python benchmarks/prepare_throughput.py --parallel 2
    .venv/bin/python benchmarks/prepare_throughput.py --parallel 2 --speeds 0.9 1.1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from jasper.data import write_manifest
from jasper.datasets.prepare import PrepareOptions, prepare

MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "librispeech-real-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mini", type=Path, default=MINI, help="a LibriSpeech-layout tree of subsets")
    parser.add_argument("--parallel", type=int, default=2, help="worker processes")
    parser.add_argument("--speeds", type=float, nargs="*", default=[], help="extra speeds, e.g. 0.9 1.1")
    args = parser.parse_args()

    subsets = sorted(p for p in args.mini.iterdir() if p.is_dir())
    if not subsets:
        raise SystemExit(f"{args.mini}: no subset directories")
    files = utterances = 0
    audio_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for subset in subsets:
            opts = PrepareOptions(
                input_dir=subset,
                dest_dir=Path(tmp) / f"{subset.name}-wav",
                speeds=tuple(args.speeds),
                parallel=args.parallel,
            )
            entries, errors = prepare(opts)
            if errors:
                raise SystemExit("\n".join(errors))
            write_manifest(entries, opts.manifest_path)
            utterances += len(entries)
            files += sum(len(e["files"]) for e in entries)
            audio_s += sum(f["duration"] for e in entries for f in e["files"])
        wall = time.perf_counter() - start
    print(
        f"{utterances} utterances, {files} WAVs, {audio_s:.1f} s of audio in {wall:.2f} s "
        f"(parallel {args.parallel}, speeds {[*args.speeds, 1]}): "
        f"{files / wall:.1f} files/s, {audio_s / wall:.0f} audio-s/s"
    )


if __name__ == "__main__":
    main()
