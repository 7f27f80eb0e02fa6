"""Adapt the English quickstart model to Spanish, against training from scratch: one command.

    .venv/bin/python benchmarks/finetune_vs_scratch.py [--minutes 10] [--base CKPT] [--out DIR]

1. `jasper data synth --language es` renders (or reuses) a Spanish corpus: Debian fortunes-es read
   by espeak-ng's and Kokoro's voices, in configs/jasper5x3_cpu_es.yaml's alphabet (a-z, á é í ñ ó ú ü).
2. `jasper train` twice on it for the same minutes, same settings (the quickstart's: AdamW, the
   time-based legacy schedule, bf16 autocast where the CPU has it, batch 16):
     scratch    random initial weights, lr 3e-3
     fine-tune  --ckpt the English quickstart checkpoint: the decoder rebuilt for the Spanish
                alphabet, the encoder frozen for the first 100 updates so the new rows cannot
                disturb it, lr 1.5e-3
   Each evaluates dev CER every --eval_frequency updates on the training clock.
3. Plots dev CER against training minutes for both (--plot) and prints the table and the figure
   the Fine-tuning issue asks for: the minutes the fine-tune needed to reach scratch's final CER.
Run nothing else meanwhile: both runs share the clock of this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JASPER = str(Path(sys.executable).with_name("jasper"))
CONFIG = REPO / "configs" / "jasper5x3_cpu_es.yaml"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jasper"


def train(name: str, corpus: Path, out: Path, minutes: float, threads: int, extra: list[str]) -> Path:
    run_dir = out / name
    command = [
        *(JASPER, "train", "--model_config", str(CONFIG), "--dataset_dir", str(corpus)),
        *(
            "--train_manifests",
            str(corpus / "synth-train.json"),
            "--val_manifests",
            str(corpus / "synth-dev.json"),
        ),
        *(
            "--output_dir",
            str(run_dir),
            "--optimizer",
            "adamw",
            "--weight_decay",
            "1e-3",
            "--batch_size",
            "16",
        ),
        *("--epochs", "1000", "--warmup_epochs", "30", "--lr_policy", "legacy", "--min_lr", "1e-5"),
        *("--lr_schedule_by", "time", "--time_limit_minutes", str(minutes), "--threads", str(threads)),
        *("--num_workers", "1", "--eval_frequency", "100", "--prediction_frequency", "100000"),
        *("--log_frequency", "25", "--save_frequency", "100000", "--save_best_from", "100000", "--seed", "1"),
        *("--amp", "--resume", "--progress", "off"),
        *extra,
    ]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return run_dir / "nvlog.json"


def cpu_name() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return f"{len(names)}-vCPU {names[0]}" if names else platform.machine()


def dev_curve(nvlog: Path) -> list[tuple[float, float]]:
    from jasper.quickstart.report import training_curves

    return [(t / 60, cer) for t, _, cer in training_curves(nvlog)[1]]


def minutes_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((m for m, cer in curve if cer <= target), None)


def plot(curves: dict[str, list[tuple[float, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, curve in curves.items():
        ax.plot([m for m, _ in curve], [c for _, c in curve], marker=".", label=name)
    ax.set_xlabel("training minutes")
    ax.set_ylabel("dev CER (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes of each run")
    parser.add_argument("--hours", type=float, default=1.5, help="size of the Spanish corpus, all splits")
    parser.add_argument(
        "--corpus", type=Path, default=CACHE / "synth-es", help="where the corpus is (cached)"
    )
    parser.add_argument(
        "--base",
        default=str(REPO / "quickstart-output" / "train" / "Jasper_best_checkpoint.pt"),
        help="the English model to adapt (default: make quickstart's); a name, path or URL",
    )
    parser.add_argument("--out", type=Path, default=REPO / "results" / "finetune-es", help="the two runs")
    parser.add_argument(
        "--plot", type=Path, default=None, help="the figure (default: OUT/finetune_vs_scratch.png)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    synth = [
        JASPER,
        "data",
        "synth",
        "--language",
        "es",
        "--out",
        str(args.corpus),
        "--hours",
        str(args.hours),
    ]
    print("$", " ".join(synth), flush=True)
    subprocess.run(synth, check=True)
    logs = {
        "scratch": train("scratch", args.corpus, args.out, args.minutes, args.threads, ["--lr", "3e-3"]),
        "fine-tune": train(
            "finetune",
            args.corpus,
            args.out,
            args.minutes,
            args.threads,
            ["--lr", "1.5e-3", "--ckpt", args.base, "--freeze", "encoder", "--unfreeze_after_steps", "100"],
        ),
    }
    curves = {name: dev_curve(log) for name, log in logs.items()}
    final = curves["scratch"][-1][1]
    reached = minutes_to_reach(curves["fine-tune"], final)
    plot(curves, args.plot or args.out / "finetune_vs_scratch.png", f"Spanish synthetic dev, {cpu_name()}")
    print(f"{'minutes':>8} " + " ".join(f"{n:>10}" for n in curves))
    for i in range(max(len(c) for c in curves.values())):
        cells = [f"{c[i][0]:>4.1f}:{c[i][1]:>5.1f}" if i < len(c) else " " * 10 for c in curves.values()]
        print(f"{i:>8} " + " ".join(cells))
    summary = {
        "scratch_final_cer": final,
        "scratch_minutes": curves["scratch"][-1][0],
        "finetune_final_cer": curves["fine-tune"][-1][1],
        "finetune_minutes_to_scratch_final": reached,
        "half_the_minutes": reached is not None and reached <= curves["scratch"][-1][0] / 2,
    }
    print(json.dumps(summary, indent=2))
    (args.out / "summary.json").write_text(json.dumps({**summary, "curves": curves}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
