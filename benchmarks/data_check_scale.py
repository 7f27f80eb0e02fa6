"""How long `jasper train`'s manifest check takes at LibriSpeech 960 h's size (281,241 utterances).

    .venv/bin/python benchmarks/data_check_scale.py [--utterances 281241] [--config configs/...yaml]

Writes a reference-format manifest of that many entries (LibriSpeech-style ids and paths, upper-case
transcripts drawn from ../shared's sentences or generated words, durations at LibriSpeech's
reading rate, a few over `max_duration`) into a temporary folder, then times the manifest pass
(`jasper.datasets.check`, what `jasper train` runs before its first step) and, for scale, the
manifest loading `train` did before it (`jasper.data.load_utterances` without the file checks).
Prints one line per figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from jasper import config
from jasper.data import load_utterances
from jasper.datasets import check
from jasper.text import Tokenizer

REPO = Path(__file__).resolve().parents[1]
SENTENCES = REPO.parent / "shared" / "data" / "text" / "sentences-public.txt"


def write_manifest(path: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    if SENTENCES.is_file():
        pool = [s.upper() for s in SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]
    else:
        words = [
            "".join(rng.choice(list("ABCDEFGHIJKLMNOPRSTUVWY"), size=rng.integers(2, 9))) for _ in range(5000)
        ]
        pool = [" ".join(rng.choice(words, size=rng.integers(5, 40))) for _ in range(20000)]
    entries = []
    for i in range(count):
        speaker, chapter = 1000 + i // 120, 5000 + i // 40
        text = pool[i % len(pool)]
        # LibriSpeech reads about 15 characters a second; one in 500 runs past max_duration
        seconds = float(len(text) / 15 * rng.uniform(0.8, 1.25) + (20.0 if i % 500 == 0 else 0.0))
        fname = f"train/{speaker}/{chapter}/{speaker}-{chapter}-{i % 40:04d}.wav"
        entries.append(
            {
                "transcript": text,
                "files": [{"fname": fname, "duration": seconds, "speed": 1, "sample_rate": 16000}],
                "original_duration": seconds,
            }
        )
    path.write_text(json.dumps(entries))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--utterances", type=int, default=281_241, help="LibriSpeech 960 h's train count")
    parser.add_argument("--config", default=str(REPO / "configs" / "jasper10x5dr_speedp-online_speca.yaml"))
    args = parser.parse_args()
    cfg = config.load(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "train.json"
        write_manifest(manifest, args.utterances)
        size = manifest.stat().st_size / 2**20
        started = time.perf_counter()
        report = check.check_manifests([manifest], tmp, check.ModelSpec.from_config(cfg))
        checked = time.perf_counter() - started
        started = time.perf_counter()
        ds = config.section(cfg, "input_train", "audio_dataset")
        load_utterances([manifest], tmp, Tokenizer(cfg["labels"]), ds, check_files=False)
        loaded = time.perf_counter() - started
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"manifest: {args.utterances} utterances, {size:.0f} MiB, {sum(report.hours.values()):.0f} h")
    print(f"manifest check (train's, no audio): {checked:.1f} s; findings: {check.summary_line(report)}")
    print(f"manifest loading (load_utterances, no file checks): {loaded:.1f} s")


if __name__ == "__main__":
    main()
