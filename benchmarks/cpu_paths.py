"""CPU fast paths of the acoustic model side by side, in one process: the probes behind the choice
of `--precision bf16` (a bf16 copy of the weights, not autocast), `--precision int8` (PyTorch's
int8 convolutions) and `--engine onnxruntime` (BatchNorm folded before export), on one batch of
2 s features.

    python benchmarks/cpu_paths.py --model_config configs/jasper10x5dr_speedp-online_speca.yaml

Each row: median of `--calls` calls after 4 warm-up calls, ms, and the largest absolute log-prob
difference from fp32 (random weights). ONNX Runtime rows need `.[export]`; `--compile` adds
`torch.compile` of the bf16 copy (a long compile on 2 cores). bf16 rows are left out on a CPU
without AVX512-BF16 or AMX, where bf16 is emulated (about 65x slower than fp32).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from jasper import config
from jasper.device import has_native_bf16
from jasper.inference.engines import export_acoustic_model, quantize_onnx
from jasper.inference.export import build_components, example_inputs
from jasper.inference.quantize import fold_batchnorms, quantize
from jasper.model import Jasper


def median_ms(fn: Callable[[], object], calls: int) -> float:
    for _ in range(4):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_config", default="configs/jasper10x5dr_speedp-online_speca.yaml")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--calls", type=int, default=15, help="timed calls per row")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the bf16 copy")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    cfg = config.load(args.model_config)
    torch.manual_seed(0)
    model = Jasper.from_config(cfg).eval()
    components = build_components(cfg, model)
    feats, lens = example_inputs("acoustic-model", components, [32000])
    calibration = [
        example_inputs("acoustic-model", components, [n], seed=i) for i, n in enumerate([16000, 48000])
    ]
    rows: list[tuple[str, float, float]] = []

    with torch.inference_mode():
        ref = model(feats, lens)[0]

        def torch_row(name: str, run: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> None:
            diff = float((run()[0].float() - ref).abs().max())
            rows.append((name, median_ms(run, args.calls), diff))
            print(f"{name}: {rows[-1][1]:.1f} ms", flush=True)

        torch_row("fp32 eager", lambda: model(feats, lens))

        def autocast() -> tuple[torch.Tensor, torch.Tensor]:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(feats, lens)

        if has_native_bf16():
            torch_row("bf16 autocast", autocast)
            bf16, xb = copy.deepcopy(model).to(torch.bfloat16), feats.to(torch.bfloat16)
            torch_row("bf16 copy (--precision bf16)", lambda: bf16(xb, lens))
            frozen = torch.jit.freeze(torch.jit.trace(bf16, (xb, lens), check_trace=False))
            torch_row("bf16 copy, TorchScript trace + freeze", lambda: frozen(xb, lens))
            if args.compile:
                compiled = torch.compile(bf16, dynamic=False)
                torch_row("bf16 copy, torch.compile", lambda: compiled(xb, lens))
        else:
            print("bf16 rows left out: this CPU has neither AVX512-BF16 nor AMX (bf16 is emulated)")
        int8 = quantize(model, calibration)
        torch_row("int8 convolutions (--precision int8)", lambda: int8(feats, lens))

    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        print(f"ONNX Runtime rows skipped: {e}")
    else:
        tmp = Path(tempfile.mkdtemp())
        plain = export_acoustic_model(model, tmp / "plain.onnx", (feats, lens))
        folded = export_acoustic_model(fold_batchnorms(model), tmp / "folded.onnx", (feats, lens))
        dynamic = tmp / "dynamic.onnx"
        quantize_dynamic(str(folded), str(dynamic), weight_type=QuantType.QInt8)
        inputs = {"features": feats.numpy(), "feature_lengths": lens.numpy().astype(np.int32)}
        for name, path in (
            ("ORT fp32, BatchNorm as exported", plain),
            ("ORT fp32, BatchNorm folded (--engine onnxruntime)", folded),
            ("ORT int8 dynamic (ConvInteger), folded", dynamic),
            (
                "ORT int8 static QDQ, folded (--engine onnxruntime --precision int8)",
                quantize_onnx(folded, tmp / "static.onnx", calibration),
            ),
        ):
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.log_severity_level = args.threads, 3
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            diff = float(np.abs(session.run(None, inputs)[0] - ref.numpy()).max())
            rows.append((name, median_ms(lambda s=session: s.run(None, inputs), args.calls), diff))
            print(f"{name}: {rows[-1][1]:.1f} ms", flush=True)

    base = rows[0][1]
    print(f"\n{args.model_config}, 1 x 2 s, {args.threads} threads, median of {args.calls} calls\n")
    print("| path | ms | speed-up vs fp32 | max abs log-prob diff |\n|---|---:|---:|---:|")
    for name, ms, diff in rows:
        print(f"| {name} | {ms:.1f} | {base / ms:.2f}x | {diff:.3g} |")


if __name__ == "__main__":
    main()
