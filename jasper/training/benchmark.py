"""Training throughput: synthetic benchmark data, and the report behind `scripts/train_benchmark.sh`.

`jasper train-benchmark data` writes random-noise utterances with random transcripts: throughput
does not depend on what is said, only on durations and batch shapes, so the benchmark needs no
corpus. `jasper train-benchmark report` reads the `nvlog.json`-style logs of `jasper train` runs
(one per process count, batch size and precision), drops the first `--warmup_steps` steps of each
(allocator, autotuning, loader start-up), and prints NVIDIA's training-performance table: steady-state
utterances/s, the mixed-precision speedup and weak scaling (throughput with N processes over
throughput with one, at the same per-process batch). The table also goes to JSON and a PNG chart.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jasper import audio as audio_io

LETTERS = "abcdefghijklmnopqrstuvwxyz"
CHARS_PER_SECOND = 12  # LibriSpeech speaks about 15; fewer keeps CTC feasible for any stride-2 model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    data = sub.add_parser("data", help="write random-noise utterances and train/val manifests")
    data.add_argument("--output_dir", required=True, help="audio files and train.json / val.json go here")
    data.add_argument("--utterances", type=int, default=64, help="training utterances")
    data.add_argument("--val_utterances", type=int, default=2, help="dev utterances (the final evaluation)")
    data.add_argument("--duration", type=float, default=4.0, help="seconds per utterance (all equal)")
    data.add_argument("--seed", type=int, default=0)
    report = sub.add_parser(
        "report", help="steady-state throughput table (stdout, JSON, PNG) from train logs"
    )
    report.add_argument("logs", nargs="+", help="JSON-lines logs of `jasper train` runs (--log_file)")
    report.add_argument("--warmup_steps", type=int, default=3, help="first steps of each run left out")
    report.add_argument("--output_dir", required=True, help="train_benchmark.json and .png go here")


def run(args: argparse.Namespace) -> int:
    if args.action == "data":
        train, val = write_synthetic(
            Path(args.output_dir), args.utterances, args.val_utterances, args.duration, args.seed
        )
        print(f"{train}: {args.utterances} x {args.duration:g} s of noise; {val}: {args.val_utterances}")
        return 0
    runs = [read_run(Path(p), args.warmup_steps) for p in args.logs]
    rows = table_rows(runs)
    print(markdown(rows))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_benchmark.json").write_text(
        json.dumps({"runs": [asdict(r) for r in runs], "table": rows}, indent=2) + "\n"
    )
    plot(runs, out / "train_benchmark.png")
    print(f"wrote {out / 'train_benchmark.json'} and {out / 'train_benchmark.png'}")
    return 0


def write_synthetic(
    out: Path, utterances: int, val_utterances: int, duration: float, seed: int
) -> tuple[Path, Path]:
    """Noise WAVs of `duration` seconds with random letter-and-space transcripts; NeMo manifests."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = random.Random(seed)
    manifests = {}
    for split, count in (("train", utterances), ("val", val_utterances)):
        lines = []
        for i in range(count):
            path = out / f"{split}-{i:05d}.wav"
            audio_io.write(
                path, (0.1 * rng.standard_normal(int(duration * audio_io.SAMPLE_RATE))).astype(np.float32)
            )
            text = " ".join(
                "".join(words.choices(LETTERS, k=words.randint(2, 8)))
                for _ in range(int(duration * CHARS_PER_SECOND / 6))
            )
            lines.append(json.dumps({"audio_filepath": path.name, "duration": duration, "text": text}))
        manifests[split] = out / f"{split}.json"
        manifests[split].write_text("\n".join(lines) + "\n")
    return manifests["train"], manifests["val"]


@dataclass
class Run:
    """One `jasper train` run, summarised over its steps after the warm-up."""

    log: str
    processes: int
    batch_size: int
    amp: bool
    amp_dtype: str | None
    device: str
    steps: int
    throughput: float  # utterances/s over all processes
    audio_rate: float  # seconds of audio/s over all processes


def read_run(path: Path, warmup_steps: int) -> Run:
    """Steady-state rates of the last run in a log: total utterances over total step time."""
    records = [json.loads(line[5:]) for line in path.read_text().splitlines() if line.startswith("DLLL ")]
    start = max(i for i, r in enumerate(records) if r.get("step") == "PARAMETER")  # logs are appended
    params = records[start]["data"]
    steps = [
        r["data"]
        for r in records[start:]
        if r["type"] == "LOG" and len(r.get("step", [])) == 3 and "train_throughput" in r["data"]
    ]
    if params.get("log_frequency") != 1:
        raise ValueError(
            f"{path}: the run logged every {params.get('log_frequency')} steps; the report needs 1"
        )
    steady = steps[warmup_steps:]
    if not steady:
        raise ValueError(f"{path}: {len(steps)} steps logged, none after the {warmup_steps} warm-up steps")
    seconds = sum(s["train_took"] for s in steady)
    return Run(
        log=str(path),
        processes=int(params["world_size"]),
        batch_size=int(params["batch_size"]),
        amp=bool(params["amp"]),
        amp_dtype=params.get("amp_dtype"),
        device=str(params["device"]),
        steps=len(steady),
        throughput=sum(s["train_throughput"] * s["train_took"] for s in steady) / seconds,
        audio_rate=sum(s["train_audio_rate"] * s["train_took"] for s in steady) / seconds,
    )


def table_rows(runs: list[Run]) -> list[dict[str, float | int | None]]:
    """One row per (batch size, processes): FP32 and AMP throughput, speedup, weak scaling."""
    by_key = {(r.batch_size, r.processes, r.amp): r for r in runs}
    rows = []
    for bs, procs in sorted({(r.batch_size, r.processes) for r in runs}):
        fp32, amp = by_key.get((bs, procs, False)), by_key.get((bs, procs, True))
        base32, base_amp = by_key.get((bs, 1, False)), by_key.get((bs, 1, True))
        rows.append(
            {
                "batch_size": bs,
                "processes": procs,
                "throughput_fp32": fp32.throughput if fp32 else None,
                "throughput_amp": amp.throughput if amp else None,
                "speedup": amp.throughput / fp32.throughput if amp and fp32 else None,
                "weak_scaling_fp32": fp32.throughput / base32.throughput if fp32 and base32 else None,
                "weak_scaling_amp": amp.throughput / base_amp.throughput if amp and base_amp else None,
            }
        )
    return rows


def markdown(rows: list[dict[str, float | int | None]]) -> str:
    """NVIDIA's README table; "-" where a precision (or the 1-process baseline) was not run."""

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None or not math.isfinite(value) else format(value, fmt)

    lines = [
        "| Batch size / GPU | GPUs | Throughput - FP32/TF32 | Throughput - mixed precision | "
        "Throughput speedup (mixed precision to FP32/TF32) | Weak scaling - FP32/TF32 | "
        "Weak scaling - mixed precision |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch_size']} | {r['processes']} | {cell(r['throughput_fp32'], '.2f')} | "
            f"{cell(r['throughput_amp'], '.2f')} | {cell(r['speedup'], '.2f')} | "
            f"{cell(r['weak_scaling_fp32'], '.2f')} | {cell(r['weak_scaling_amp'], '.2f')} |"
        )
    return "\n".join(lines) + "\n(throughput in utterances/s over all processes, steady state)"


def plot(runs: list[Run], path: Path) -> None:
    """Throughput against processes: one line per batch size and precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for bs, amp in sorted({(r.batch_size, r.amp) for r in runs}):
        mine = sorted((r for r in runs if (r.batch_size, r.amp) == (bs, amp)), key=lambda r: r.processes)
        precision = f"AMP ({mine[0].amp_dtype})" if amp else "FP32/TF32"
        ax.plot(
            [r.processes for r in mine],
            [r.throughput for r in mine],
            marker="o",
            label=f"batch {bs}, {precision}",
        )
    ax.set_xticks(sorted({r.processes for r in runs}))
    ax.set_xlabel("processes (GPUs)")
    ax.set_ylabel("utterances / s")
    ax.set_title(f"Jasper training throughput ({runs[0].device})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
