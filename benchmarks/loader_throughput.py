"""Data loader throughput: seconds of audio delivered per second, speed perturbation on.

Reads the real LibriSpeech clips (FLAC) and their WAV conversion through `AudioDataset` and the
DataLoader exactly as training does (bucketing sampler, workers, collate), and prints audio-seconds
per second for each format. Training on this CPU consumes 150-250 audio-seconds per second, so the
loader must deliver well above that.

    python benchmarks/loader_throughput.py [--workers 2] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import soundfile as sf

from jasper import config
from jasper.data import AudioDataset, BucketingBatchSampler, build_loader, load_utterances
from jasper.text import Tokenizer

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "librispeech-real-mini"


def manifest(root: Path, suffix: str, out: Path) -> Path:
    """A NeMo-style manifest of every clip under `root` with the given audio suffix."""
    lines = []
    for trans in sorted(root.glob("*/*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            uid, text = line.split(" ", 1)
            path = trans.parent / f"{uid}{suffix}"
            lines.append(
                json.dumps(
                    {
                        "audio_filepath": str(path.relative_to(root)),
                        "duration": sf.info(str(path)).duration,
                        "text": text,
                    }
                )
            )
    out.write_text("\n".join(lines) + "\n")
    return out


def throughput(root: Path, manifest_path: Path, workers: int, epochs: int) -> float:
    cfg = config.load(REPO / "configs" / "jasper10x5dr_speedp-online_speca.yaml")
    ds_cfg = config.section(cfg, "input_train", "audio_dataset")
    utts, _ = load_utterances([manifest_path], root, Tokenizer(cfg["labels"]), ds_cfg)
    dataset = AudioDataset(utts, ds_cfg, augment=True)
    sampler = BucketingBatchSampler(dataset.durations(), batch_size=8, drop_last=False)
    loader = build_loader(dataset, sampler, workers=workers)
    audio = 0.0
    start = time.perf_counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for batch in loader:
            audio += float(batch.audio_lens.sum()) / ds_cfg["sample_rate"]
    return audio / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wav_root = tmp / "wav"
        for flac in MINI.glob("*/*/*/*.flac"):
            dest = wav_root / flac.relative_to(MINI).with_suffix(".wav")
            dest.parent.mkdir(parents=True, exist_ok=True)
            data, rate = sf.read(flac, dtype="int16")
            sf.write(dest, data, rate, subtype="PCM_16")
        for trans in MINI.glob("*/*/*/*.trans.txt"):
            (wav_root / trans.relative_to(MINI)).write_text(trans.read_text())
        for name, root, suffix in (("FLAC", MINI, ".flac"), ("WAV", wav_root, ".wav")):
            rate = throughput(root, manifest(root, suffix, tmp / f"{name}.json"), args.workers, args.epochs)
            print(
                f"{name}: {rate:.0f} audio-seconds/s ({args.workers} workers, speed perturbation 0.85-1.15, "
                f"silence trimming on)"
            )


if __name__ == "__main__":
    main()
