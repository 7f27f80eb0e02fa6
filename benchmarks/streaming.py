"""`jasper transcribe --stream` on a short and a long recording: real-time factor, compute latency per
chunk and peak memory (RSS) of the whole process, with the whole-file path on the long one beside it.

    python benchmarks/streaming.py                                  # jasper5x3_cpu, random weights
    python benchmarks/streaming.py --ckpt CKPT --minutes 10 --threads 2
    python benchmarks/streaming.py --ckpt CKPT --accuracy [--manifest M.json --dataset_dir D]

The recordings are the 36 real LibriSpeech clips end to end, repeated to length (16 kHz WAV). The
model's weights do not change its speed, so without --ckpt a random jasper5x3_cpu checkpoint is
used. Each row is one `jasper transcribe` process; peak RSS comes from the kernel (wait4).

--accuracy instead scores a trained checkpoint: WER and CER of the streamed and the whole-file
transcripts (greedy, no leading padding) of each utterance of the real clips (and --manifest),
against the references: the cost of normalising each window on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from jasper import audio, config
from jasper.datasets.prepare import find_utterances
from jasper.model import Jasper

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "librispeech-real-mini"
STATS = re.compile(
    r"real-time factor ([\d.]+); compute per chunk p50 ([\d.]+) ms, p90 ([\d.]+) ms, p100 ([\d.]+) ms"
)


def recording(seconds: float, path: Path) -> Path:
    """The real clips end to end, repeated to `seconds`, as 16 kHz 16-bit WAV (written in pieces)."""
    clips = [audio.load(f) for f in sorted(MINI.rglob("*.flac"))]
    if not clips:
        raise SystemExit(f"no clips under {MINI}")
    total = int(seconds * audio.SAMPLE_RATE)
    with sf.SoundFile(path, "w", audio.SAMPLE_RATE, 1, "PCM_16") as f:
        written = 0
        while written < total:
            for clip in clips:
                piece = clip[: total - written]
                f.write(piece)
                written += piece.size
                if written >= total:
                    break
    return path


def random_checkpoint(model_config: Path, path: Path) -> Path:
    torch.manual_seed(0)
    cfg = config.load(model_config)
    torch.save({"state_dict": Jasper.from_config(cfg).state_dict(), "config": cfg}, path)
    return path


def run(args: list[str], threads: int) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB and stderr of one `jasper transcribe` process."""
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jasper.cli", "transcribe", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"jasper transcribe {' '.join(args)} failed:\n{stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024, stderr


def accuracy(args: argparse.Namespace) -> None:
    """WER/CER of streamed and whole-file transcripts of the same utterances, in one process."""
    import jiwer

    from jasper.decoding import collapse
    from jasper.inference.pipeline import load, log_probs
    from jasper.inference.streaming import StreamingTranscriber, transcribe_stream
    from jasper.text import normalize

    torch.set_num_threads(args.threads)
    pipe = load(args.ckpt, device="cpu")
    sets = {"real clips": [(u.flac, u.transcript) for u in find_utterances(MINI)[0]]}
    if args.manifest is not None:
        entries = json.loads(args.manifest.read_text(encoding="utf-8"))
        root = args.dataset_dir or args.manifest.parent
        sets[args.manifest.name] = [(root / e["files"][-1]["fname"], e["transcript"]) for e in entries]
    print(f"\n{args.ckpt}, greedy, no leading padding")
    print("| utterances | whole file WER / CER | --stream WER / CER |")
    print("|---|---:|---:|")
    labels = pipe.tokenizer.labels
    for name, items in sets.items():
        refs, whole, streamed = [], [], []
        for path, text in items:
            samples = audio.load(path)
            ids = log_probs(samples, pipe.model, pipe.features, pad_leading=0).argmax(-1).tolist()
            whole.append(pipe.tokenizer.decode(collapse(ids, pipe.tokenizer.blank)))
            streamer = StreamingTranscriber(pipe.model, pipe.features, pipe.tokenizer)
            blocks = (samples[i : i + 8000] for i in range(0, samples.size, 8000))
            streamed.append(" ".join(w.word for w in transcribe_stream(blocks, streamer)))
            refs.append(normalize(text, labels))
        scores = [
            f"{100 * jiwer.wer(refs, h):.1f}% / {100 * jiwer.cer(refs, h):.1f}%" for h in (whole, streamed)
        ]
        print(f"| {name} ({len(items)}) | {scores[0]} | {scores[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--ckpt", type=Path, default=None, help="checkpoint (default: random jasper5x3_cpu)")
    parser.add_argument("--model_config", type=Path, default=REPO / "configs" / "jasper5x3_cpu.yaml")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="length of the long recording (default 10)"
    )
    parser.add_argument("--short_seconds", type=float, default=10.0, help="the short one (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the transcriber (default 2)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--no_whole_file", action="store_true", help="skip the whole-file row")
    parser.add_argument(
        "--accuracy", action="store_true", help="score --ckpt streamed and whole-file instead"
    )
    parser.add_argument("--manifest", type=Path, default=None, help="with --accuracy: a test manifest too")
    parser.add_argument("--dataset_dir", type=Path, default=None, help="root of the manifest's fnames")
    args = parser.parse_args()
    if args.accuracy:
        if args.ckpt is None:
            raise SystemExit("--accuracy needs --ckpt (a trained checkpoint)")
        accuracy(args)
        return
    with tempfile.TemporaryDirectory(prefix="jasper-stream-") as tmp_dir:
        tmp = Path(tmp_dir)
        ckpt = args.ckpt or random_checkpoint(args.model_config, tmp / "random.pt")
        short = recording(args.short_seconds, tmp / "short.wav")
        long = recording(args.minutes * 60, tmp / "long.wav")
        common = ["--ckpt", str(ckpt), "--precision", args.precision, "--device", "cpu"]
        rows = []
        for name, path in ((f"{args.short_seconds:g} s", short), (f"{args.minutes:g} min", long)):
            wall, rss, stderr = run([str(path), *common, "--stream"], args.threads)
            match = STATS.search(stderr)
            if match is None:
                raise SystemExit(f"no stream statistics in:\n{stderr[-2000:]}")
            seconds = sf.info(str(path)).duration
            rtf, p50, p90, pmax = (float(g) for g in match.groups())
            rows.append((f"--stream, {name}", seconds, wall, rtf, rss, f"{p50:.1f} / {p90:.1f} / {pmax:.1f}"))
        if not args.no_whole_file:
            wall, rss, _ = run([str(long), *common], args.threads)
            seconds = sf.info(str(long)).duration
            rows.append((f"whole file (no --stream), {args.minutes:g} min", seconds, wall, np.nan, rss, "-"))
    model = ckpt if args.ckpt else f"random {args.model_config.stem}"
    print(f"\n{model}, {args.precision}, {args.threads} threads")
    print(
        "| run | audio s | process wall s | real-time factor (compute) | peak RSS MB | chunk ms p50/p90/max |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name, seconds, wall, rtf, rss, latency in rows:
        rtf_text = "-" if np.isnan(rtf) else f"{rtf:.4f}"
        print(f"| {name} | {seconds:.0f} | {wall:.1f} | {rtf_text} | {rss:.0f} | {latency} |")
    growth = rows[1][4] - rows[0][4]
    print(f"\npeak RSS, long minus short stream: {growth:+.0f} MB")


if __name__ == "__main__":
    main()
