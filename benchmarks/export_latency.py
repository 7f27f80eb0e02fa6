"""Acoustic-model latency: eager PyTorch vs the exported ONNX (ONNX Runtime) and TorchScript files.

Batch 1 of `--seconds` of audio by default, as a server sees a lone request. The model is exported
with random weights (speed does not depend on them) and the median of `--repeats` timed calls after
`--warmup` calls is reported, each runtime on the machine's default thread count.

    python benchmarks/export_latency.py --model_config configs/jasper5x3_cpu.yaml
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from jasper import config
from jasper.inference import export
from jasper.model import Jasper


def median_ms(call: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_config", nargs="+", default=["configs/jasper5x3_cpu.yaml"], help="configs")
    parser.add_argument("--seconds", type=float, default=2.0, help="audio seconds per utterance")
    parser.add_argument("--batch_size", type=int, default=1, help="utterances per call")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls")
    args = parser.parse_args()
    print("| config | batch x audio | eager PyTorch ms | TorchScript ms | ONNX Runtime ms | eager / ORT |")
    print("|---|---|---:|---:|---:|---:|")
    for path in args.model_config:
        cfg = config.load(path)
        torch.manual_seed(0)
        model = Jasper.from_config(cfg).eval()
        parts = export.build_components(cfg, model)
        rate = config.section(cfg, "input_val", "filterbank_features")["sample_rate"]
        lens = [int(args.seconds * rate)] * args.batch_size
        inputs = export.example_inputs("acoustic-model", parts, lens)
        with tempfile.TemporaryDirectory() as tmp:
            times = {}
            with torch.inference_mode():
                eager = parts["acoustic-model"]
                times["eager"] = median_ms(lambda m=eager, x=inputs: m(*x), args.warmup, args.repeats)
            for fmt in ("torchscript", "onnx"):
                file = export.export_path(Path(tmp), "acoustic-model", fmt, "fp32")
                if fmt == "onnx":
                    export.export_onnx(
                        parts["acoustic-model"], inputs, export.SIGNATURES["acoustic-model"], file
                    )
                else:
                    export.export_torchscript(parts["acoustic-model"], inputs, file)
                run = export.runner(file)
                arrays = [x.numpy() for x in inputs]
                times[fmt] = median_ms(lambda run=run, arrays=arrays: run(*arrays), args.warmup, args.repeats)
        print(
            f"| {Path(path).stem} | {args.batch_size} x {args.seconds:g} s | {times['eager']:.1f} "
            f"| {times['torchscript']:.1f} | {times['onnx']:.1f} | {times['eager'] / times['onnx']:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
