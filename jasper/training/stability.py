"""Training stability: one recipe trained with several seeds, every final model evaluated on every
dataset, and the reference README's table: a row per dataset, a column per seed, then Mean and Std.

`scripts/train_stability.sh` runs `jasper train-stability`. Seed S trains through `scripts/train.sh`
in OUTPUT_DIR/seed{S} with the caller's train.sh variables (DATA_DIR, MODEL_CONFIG, NUM_GPUS, AMP,
EPOCHS, ...) and RESUME=true, so a stopped stability run continues where it stopped and a finished
seed is not trained again. Its newest checkpoint is then evaluated on each dataset with
`scripts/inference.sh` (greedy, EMA weights when EMA > 0). Std is the sample standard deviation
(n - 1), the spread one would expect between two new seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from jasper import checkpoint

REPO = Path(__file__).resolve().parents[2]
LIBRISPEECH = ("dev-clean", "dev-other", "test-clean", "test-other")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="one training run per seed")
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(LIBRISPEECH),
        metavar="NAME[=MANIFEST]",
        help="evaluation sets, rows of the table; NAME alone means DATA_DIR/librispeech-NAME-wav.json "
        f"(default: {' '.join(LIBRISPEECH)})",
    )
    parser.add_argument("--output_dir", required=True, help="seed{S}/ run folders, stability.{md,json,png}")
    parser.add_argument(
        "--data_dir", default=os.environ.get("DATA_DIR", "/datasets/LibriSpeech"), help="default: $DATA_DIR"
    )
    parser.add_argument(
        "--report_only", action="store_true", help="train nothing: tabulate the evaluations already made"
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.output_dir)
    datasets = [_dataset(spec, args.data_dir) for spec in args.datasets]
    wers: dict[str, dict[int, float]] = {name: {} for name, _ in datasets}
    for seed in args.seeds:
        run_dir = out / f"seed{seed}"
        if not args.report_only:
            print(f"== seed {seed}: training in {run_dir}", file=sys.stderr, flush=True)
            _script("train.sh", {"SEED": str(seed), "OUTPUT_DIR": str(run_dir), "RESUME": "true"})
        for name, manifest in datasets:
            log = run_dir / "eval" / f"{name}.json"
            if not args.report_only:
                _evaluate(run_dir, name, manifest, log)
            if log.is_file():
                wers[name][seed] = _wer(log)
    rows = table(wers, args.seeds)
    text = markdown(rows, args.seeds)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stability.md").write_text(text + "\n")
    (out / "stability.json").write_text(json.dumps({"seeds": args.seeds, "rows": rows}, indent=2) + "\n")
    plot(rows, args.seeds, out / "stability.png")
    print(f"wrote {out / 'stability.md'}, stability.json and stability.png", file=sys.stderr)
    missing = [(r["dataset"], s) for r in rows for s in args.seeds if r["wer"].get(str(s)) is None]
    if missing:
        print(f"train-stability: no evaluation for {missing}", file=sys.stderr)
        return 1
    return 0


def _dataset(spec: str, data_dir: str) -> tuple[str, str]:
    name, _, manifest = spec.partition("=")
    return name, manifest or str(Path(data_dir) / f"librispeech-{name}-wav.json")


def _script(name: str, env: dict[str, str]) -> None:
    """Run scripts/NAME with the caller's environment plus `env`; stop the whole run if it fails."""
    done = subprocess.run(["bash", str(REPO / "scripts" / name)], env=os.environ | env)
    if done.returncode != 0:
        raise SystemExit(f"train-stability: scripts/{name} failed with {done.returncode} ({env})")


def _evaluate(run_dir: Path, name: str, manifest: str, log: Path) -> None:
    found = checkpoint.latest_loadable(run_dir)
    if found is None:
        raise SystemExit(f"train-stability: {run_dir} has no readable checkpoint to evaluate")
    ema = float(os.environ.get("EMA", "0.999")) > 0  # train.sh's default EMA is 0.999
    _script(
        "inference.sh",
        {
            "CHECKPOINT": str(found[0]),
            "MANIFESTS": manifest,
            "OUTPUT_DIR": str(run_dir / "eval"),
            "LOG_FILE": str(log),
            "PREDICTION_FILE": str(run_dir / "eval" / f"{name}.predictions"),
            "EMA": "true" if ema else "false",
        },
    )


def _wer(log: Path) -> float:
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return next(r["eval_wer"] for r in records if r.get("event") == "eval")


def table(wers: dict[str, dict[int, float]], seeds: list[int]) -> list[dict]:
    """Per dataset: WER per seed (keys are seeds as strings, as in JSON), mean and sample std."""
    rows = []
    for name, by_seed in wers.items():
        values = [by_seed[s] for s in seeds if s in by_seed]
        rows.append(
            {
                "dataset": name,
                "wer": {str(s): by_seed.get(s) for s in seeds},
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
            }
        )
    return rows


def markdown(rows: list[dict], seeds: list[int]) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    head = "| WER (%) | " + " | ".join(f"Seed #{s}" for s in seeds) + " | Mean | Std |"
    lines = [head, "|---|" + "---:|" * (len(seeds) + 2)]
    for r in rows:
        cells = [cell(r["wer"][str(s)]) for s in seeds] + [cell(r["mean"]), cell(r["std"])]
        lines.append(f"| {r['dataset']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], seeds: list[int], path: Path) -> None:
    """Each dataset's WER per seed as dots, with the mean as a bar: the spread at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(rows), 3.2))
    for i, r in enumerate(rows):
        values = [r["wer"][str(s)] for s in seeds if r["wer"][str(s)] is not None]
        if r["mean"] is not None:
            ax.bar(i, r["mean"], color="#c6dbef", width=0.6)
        ax.scatter([i] * len(values), values, color="#08519c", zorder=3, s=14)
    ax.set_xticks(range(len(rows)), [r["dataset"] for r in rows])
    ax.set_ylabel("WER (%)")
    ax.set_title(f"{len(seeds)} seeds: WER per seed (dots) and mean (bars)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
