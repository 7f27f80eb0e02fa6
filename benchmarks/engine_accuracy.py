"""WER and CER of one checkpoint through every CPU inference path (`jasper infer --engine E
--precision P`) on the same utterances: the accuracy cost of bf16, int8 and ONNX Runtime.

    python benchmarks/engine_accuracy.py   # the quickstart's checkpoint, test split and real clips
    python benchmarks/engine_accuracy.py --ckpt CKPT --model_config CFG --set NAME=DATA_DIR:A.json,B.json

Each cell is one `jasper infer` run as the quickstart evaluates (greedy, `--pad_leading 0`, batch
16, CPU); int8 calibrates on the first 4 batches of the set it scores. A path whose WER moves by
more than 0.5 point (absolute) from PyTorch fp32 on any set is marked: the issue's line for a
path that may not be the default. Wall time of each run is printed too, but it includes loading,
ONNX export and calibration: `jasper infer-benchmark --engines ...` is the latency figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "data" / "quickstart"
PATHS = (
    ("torch", "fp32"),
    ("torch", "bf16"),
    ("torch", "int8"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
)
LINE = 0.5  # WER points


def newest_quickstart_checkpoint() -> Path | None:
    from jasper.checkpoint import latest_loadable

    train = REPO / "quickstart-output" / "train"
    found = latest_loadable(train) if train.is_dir() else None
    return found[0] if found else None


def default_sets() -> dict[str, tuple[Path, list[Path]]]:
    """The quickstart's test split and its real LibriSpeech clips, where they exist."""
    sets = {}
    synth = QUICKSTART / "synth"
    if (synth / "synth-test.json").is_file():
        sets["synth-test"] = (synth, [synth / "synth-test.json"])
    real = QUICKSTART / "librispeech-mini"
    if manifests := sorted(real.glob("librispeech-*-wav.json")):
        sets["librispeech-real"] = (real, manifests)
    return sets


def parse_set(text: str) -> tuple[str, tuple[Path, list[Path]]]:
    name, _, rest = text.partition("=")
    data_dir, _, manifest = rest.partition(":")
    if not (name and data_dir and manifest):
        raise argparse.ArgumentTypeError(f"expected NAME=DATA_DIR:MANIFEST.json[,MORE.json], got {text!r}")
    return name, (Path(data_dir), [Path(m) for m in manifest.split(",")])


def score(
    ckpt: Path,
    model_config: Path,
    engine: str,
    precision: str,
    data_dir: Path,
    manifests: list[Path],
    threads: int,
) -> dict:
    """One `jasper infer` run; its eval record (eval_wer, eval_cer, words...) and wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        log_file = Path(tmp) / "log.json"
        cmd = [sys.executable, "-m", "jasper.cli", "infer", "--model_config", str(model_config)]
        cmd += [
            "--ckpt",
            str(ckpt),
            "--cpu",
            "--dataset_dir",
            str(data_dir),
            "--val_manifests",
            *map(str, manifests),
        ]
        cmd += ["--pad_leading", "0", "--batch_size", "16", "--workers", "1", "--engine", engine]
        cmd += ["--precision", precision, "--output_dir", tmp, "--log_file", str(log_file)]
        t0 = time.perf_counter()
        env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"{engine} {precision} failed:\n{out.stderr[-3000:]}")
        records = [json.loads(line) for line in log_file.read_text().splitlines()]
    record = next(r for r in records if r["event"] == "eval")
    return record | {"seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--ckpt", type=Path, default=None, help="checkpoint (default: the quickstart's newest)"
    )
    parser.add_argument(
        "--model_config", type=Path, default=REPO / "configs" / "jasper5x3_cpu.yaml", help="its model config"
    )
    parser.add_argument(
        "--set",
        type=parse_set,
        action="append",
        default=None,
        help="NAME=DATA_DIR:MANIFEST.json[,MORE.json], repeatable (default: the quickstart's synth-test "
        "and real clips)",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        default=[f"{e}:{p}" for e, p in PATHS],
        help="ENGINE:PRECISION pairs to score, torch:fp32 first (default: %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per run (default: %(default)s)")
    args = parser.parse_args()
    ckpt = args.ckpt or newest_quickstart_checkpoint()
    if ckpt is None:
        raise SystemExit(
            "no --ckpt, and no quickstart checkpoint under quickstart-output/train: run make quickstart"
        )
    sets = dict(args.set) if args.set else default_sets()
    if not sets:
        raise SystemExit("no --set, and no quickstart data under data/quickstart: run make quickstart")
    print(f"checkpoint {ckpt}, {args.model_config.name}, {args.threads} threads", flush=True)
    results: dict[tuple[str, str], dict[str, dict]] = {}
    paths = [tuple(p.split(":", 1)) for p in args.paths]
    if paths[0] != ("torch", "fp32"):
        raise SystemExit("--paths: torch:fp32 comes first, the baseline the others are compared with")
    for engine, precision in paths:
        for name, (data_dir, manifests) in sets.items():
            r = score(ckpt, args.model_config, engine, precision, data_dir, manifests, args.threads)
            results.setdefault((engine, precision), {})[name] = r
            print(
                f"{engine} {precision} {name}: WER {r['eval_wer']:.2f}% CER {r['eval_cer']:.2f}% "
                f"({r['words']} words, {r['seconds']:.0f} s)",
                flush=True,
            )
    base = results[("torch", "fp32")]
    print("\n| path | " + " | ".join(f"{n} WER / CER" for n in sets) + " | WER moved by |")
    print("|---|" + "---:|" * len(sets) + "---|")
    for (engine, precision), row in results.items():
        cells = [f"{row[n]['eval_wer']:.2f}% / {row[n]['eval_cer']:.2f}%" for n in sets]
        moves = [row[n]["eval_wer"] - base[n]["eval_wer"] for n in sets]
        flag = " (over the line)" if any(abs(m) > LINE for m in moves) else ""
        label = f"{'PyTorch' if engine == 'torch' else 'ONNX Runtime'} {precision}"
        print(
            f"| {label} | " + " | ".join(cells) + " | " + ", ".join(f"{m:+.2f}" for m in moves) + flag + " |"
        )


if __name__ == "__main__":
    main()
