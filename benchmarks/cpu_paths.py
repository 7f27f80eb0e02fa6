"""CPU fast paths of the acoustic model side by side, in one process: the probes behind the choice
of `--precision bf16` (a bf16 copy of the weights, not autocast) and `--precision int8` (PyTorch's
int8 convolutions, not ONNX Runtime), on one batch of 2 s features.

    python benchmarks/cpu_paths.py --model_config configs/jasper10x5dr_speedp-online_speca.yaml

Each row: median of `--calls` calls after 4 warm-up calls, ms, and the largest absolute log-prob
difference from fp32 (random weights). ONNX Runtime rows need `.[export]`; `--compile` adds
`torch.compile` of the bf16 copy (a long compile on 2 cores).
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
from jasper.export import SIGNATURES, build_components, example_inputs, export_onnx
from jasper.model import Jasper
from jasper.quantize import quantize


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

        torch_row("bf16 autocast", autocast)
        bf16, xb = copy.deepcopy(model).to(torch.bfloat16), feats.to(torch.bfloat16)
        torch_row("bf16 copy (--precision bf16)", lambda: bf16(xb, lens))
        frozen = torch.jit.freeze(torch.jit.trace(bf16, (xb, lens), check_trace=False))
        torch_row("bf16 copy, TorchScript trace + freeze", lambda: frozen(xb, lens))
        if args.compile:
            compiled = torch.compile(bf16, dynamic=False)
            torch_row("bf16 copy, torch.compile", lambda: compiled(xb, lens))
        int8 = quantize(model, calibration)
        torch_row("int8 convolutions (--precision int8)", lambda: int8(feats, lens))

    try:
        import onnxruntime as ort
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )
    except ImportError as e:
        print(f"ONNX Runtime rows skipped: {e}")
    else:
        tmp = Path(tempfile.mkdtemp())
        fp32_file = tmp / "acoustic.onnx"
        export_onnx(components["acoustic-model"], (feats, lens), SIGNATURES["acoustic-model"], fp32_file)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = [{"features": f.numpy(), "feature_lengths": n.numpy()} for f, n in calibration]

            def get_next(self) -> dict | None:
                return self.items.pop() if self.items else None

        dynamic, static = tmp / "dynamic.onnx", tmp / "static.onnx"
        quantize_dynamic(str(fp32_file), str(dynamic), weight_type=QuantType.QInt8)
        quantize_static(
            str(fp32_file),
            str(static),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["Conv"],
        )
        inputs = {"features": feats.numpy(), "feature_lengths": lens.numpy()}
        for name, path in (
            ("ORT fp32", fp32_file),
            ("ORT int8 dynamic", dynamic),
            ("ORT int8 static QDQ", static),
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
