"""Inference latency benchmark (`jasper infer-benchmark`) and the latency statistics it reports.

The reference measured latency inside `inference.py` and printed numbers that the README tables
were then assembled from by hand; its "50%" was the mean and its percentiles came from a heap
with an off-by-one (spec 7.2, 12.18). Here one process sweeps batch sizes x durations x
precisions with the model loaded once, and prints the README's table itself, with true
percentiles (`numpy.percentile`) and the mean labelled as such. `--engines torch onnxruntime`
adds ONNX Runtime (`jasper.inference.engines`) to the sweep, each engine and precision a table of its own
with its speed-up over PyTorch fp32. Raw per-step timings and the
machine description go to a JSON file, average latency vs batch size to a PNG.

Two regions are timed per step, with device synchronisation at both ends so GPU work is counted:
  dnn  the acoustic model and the argmax (what the reference's `dnn` latency covered);
  e2e  end to end: audio already in host memory -> device copy, features, model, argmax, CTC
       collapse to strings.
Input is synthetic audio of exactly the configured duration (no dataset needed), or real
utterances from manifests (`--val_manifests`), whose features are padded to the same fixed
length (`pad_to_max_duration`) so every step of a run has the same shape.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jasper import config, graphs
from jasper.decoding import decode_ids, greedy_ids
from jasper.device import PRECISIONS, inference_dtype
from jasper.features import FilterbankFeatures
from jasper.inference import engines
from jasper.inference.engines import ENGINES, GRAPHS, ORT_PRECISIONS
from jasper.inference.timing import LatencyStats, synchronize
from jasper.text import Tokenizer

log = logging.getLogger(__name__)

# Step counts when the command line gives none: the reference's on CUDA, a few minutes' worth on CPU.
DEFAULT_STEPS = {"cuda": (500, 10), "cpu": (20, 3)}


@dataclass
class Measurement:
    """One configuration's raw timings (ms per batch) and their summaries."""

    precision: str
    batch_size: int
    duration: float
    frames: int
    dnn_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    engine: str = "torch"
    compiles: int = 0  # torch.compile / CUDA graphs: shapes compiled or captured so far
    compile_seconds: float = 0.0

    @property
    def label(self) -> str:
        """`fp32`, `int8`... for PyTorch; `onnxruntime int8`, `compile bf16`... otherwise."""
        return self.precision if self.engine == "torch" else f"{self.engine} {self.precision}"

    @property
    def title(self) -> str:
        names = {"torch": "", "onnxruntime": "ONNX Runtime ", **{k: v + " " for k, v in GRAPHS.items()}}
        return names[self.engine] + self.precision.upper()

    @property
    def dnn(self) -> LatencyStats:
        return LatencyStats.from_ms(self.dnn_ms)

    @property
    def e2e(self) -> LatencyStats:
        return LatencyStats.from_ms(self.e2e_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "duration_s": self.duration,
            "feature_frames": self.frames,
            "dnn": asdict(self.dnn) | {"raw_ms": self.dnn_ms},
            "e2e": asdict(self.e2e) | {"raw_ms": self.e2e_ms},
            "compiles": self.compiles,
            "compile_seconds": self.compile_seconds,
        }


@torch.inference_mode()
def measure(
    model: nn.Module,
    features: nn.Module,
    tokenizer: Tokenizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    warmup_steps: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[list[float], list[float], int]:
    """Time `warmup_steps + steps` batches of host audio; return (dnn ms, e2e ms, feature frames).

    `model` must already be on `device` in `dtype`; features are computed in float32 and cast.
    """
    dnn_ms, e2e_ms, frames = [], [], 0
    for step in range(warmup_steps + steps):
        audio, audio_lens = next(batches)
        synchronize(device)
        t0 = time.perf_counter()
        feats, feat_lens = features(audio.to(device), audio_lens.to(device))
        feats = feats.to(dtype)
        synchronize(device)
        t1 = time.perf_counter()
        log_probs, out_lens = model(feats, feat_lens)
        ids = greedy_ids(log_probs, out_lens, tokenizer.blank)
        synchronize(device)
        t2 = time.perf_counter()
        decode_ids(ids, out_lens, tokenizer)
        t3 = time.perf_counter()
        frames = feats.shape[-1]
        if step >= warmup_steps:
            dnn_ms.append((t2 - t1) * 1e3)
            e2e_ms.append((t3 - t0) * 1e3)
    return dnn_ms, e2e_ms, frames


def synthetic_batches(
    batch_size: int, duration: float, sample_rate: int, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The same batch of Gaussian noise (speech-like level) of exactly `duration` seconds, forever."""
    samples = round(duration * sample_rate)
    gen = torch.Generator().manual_seed(seed)
    audio = 0.1 * torch.randn(batch_size, samples, generator=gen)
    lens = torch.full((batch_size,), samples, dtype=torch.int32)
    return itertools.repeat((audio, lens))


def manifest_batches(
    cfg: dict[str, Any],
    dataset_dir: str,
    manifests: Sequence[str],
    batch_size: int,
    duration: float,
    tokenizer: Tokenizer,
    pool_size: int = 64,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches cycling over up to `pool_size` utterances no longer than `duration`, read once."""
    from jasper.data import AudioDataset, collate, load_utterances

    ds_cfg = config.section(cfg, "input_val", "audio_dataset") | {"max_duration": duration}
    utterances, _ = load_utterances(manifests, dataset_dir, tokenizer, ds_cfg)
    if not utterances:
        raise config.ConfigError(f"no utterance in {list(manifests)} is {duration} s or shorter")
    dataset = AudioDataset(utterances[: max(pool_size, batch_size)], ds_cfg)
    items = [dataset[i] for i in range(len(dataset))]
    cycle = itertools.cycle(items)
    while True:
        batch = collate([next(cycle) for _ in range(batch_size)])
        yield batch.audio, batch.audio_lens


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if device.type == "cuda":
        info |= {
            "device_name": torch.cuda.get_device_name(device),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        }
    else:
        info["device_name"] = info["cpu"]
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_table(
    measurements: Sequence[Measurement], stage: str, baseline: dict | None = None, against: str = "FP32"
) -> str:
    """The README's latency table for one precision; with `baseline` (fp32 averages) a speed-up column.

    `baseline` maps (batch size, duration) to the average latency the speed-up is relative to, the
    latency of the row named `against`.
    """
    head = "| BS | Duration (s) | 90% (ms) | 95% (ms) | 99% (ms) | Avg (ms) |"
    rule = "|---:|---:|---:|---:|---:|---:|"
    if baseline is not None:
        head += f" Speed-up vs {against} |"
        rule += "---:|"
    compiled = any(m.compiles for m in measurements)
    if compiled:  # shapes compiled or captured by the end of each row: one per row means no recompiles
        head += " Graphs | Compile (s) |"
        rule += "---:|---:|"
    lines = [head, rule]
    for m in measurements:
        s: LatencyStats = getattr(m, stage)
        row = f"| {m.batch_size} | {m.duration:g} | {s.p90:.2f} | {s.p95:.2f} | {s.p99:.2f} | {s.mean:.2f} |"
        if baseline is not None:
            ref = baseline.get((m.batch_size, m.duration))
            row += f" {ref / s.mean:.2f}x |" if ref else " - |"
        if compiled:
            row += f" {m.compiles} | {m.compile_seconds:.1f} |"
        lines.append(row)
    return "\n".join(lines)


STAGE_TITLES = {
    "dnn": "model only (acoustic model + argmax)",
    "e2e": "end to end (features + model + decode)",
}


def report(measurements: Sequence[Measurement]) -> str:
    """All tables: per engine and precision, one per timed region; the others get the speed-up over
    PyTorch FP32 when it was run (a compiled or CUDA-graph table: over eager PyTorch in its precision)."""
    blocks = []
    labels = list(dict.fromkeys(m.label for m in measurements))
    for label in labels:
        rows = [m for m in measurements if m.label == label]
        # A captured graph is compared with the eager model in its precision, the rest with fp32.
        against = rows[0].precision if rows[0].engine in GRAPHS and rows[0].precision in labels else "fp32"
        for stage in ("dnn", "e2e"):
            baseline = None
            if label != against and against in labels:
                baseline = {
                    (m.batch_size, m.duration): getattr(m, stage).mean
                    for m in measurements
                    if m.label == against
                }
            title = f"{rows[0].title} latency, {STAGE_TITLES[stage]}, {rows[0].dnn.n} steps per row"
            eager = "eager " if rows[0].engine in GRAPHS else ""
            table = format_table(rows, stage, baseline, eager + against.upper())
            blocks.append(f"{title}\n\n{table}")
    return "\n\n".join(blocks)


def plot(measurements: Sequence[Measurement], path: str | Path) -> None:
    """Average latency vs batch size, one line per duration (and engine and precision), per timed region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = list(dict.fromkeys((m.label, m.duration) for m in measurements))
    for ax, stage in zip(axes, ("dnn", "e2e"), strict=True):
        for label, duration in groups:
            rows = sorted(
                (m for m in measurements if (m.label, m.duration) == (label, duration)),
                key=lambda m: m.batch_size,
            )
            xs = [m.batch_size for m in rows]
            ys = [getattr(m, stage).mean for m in rows]
            style = "-o" if label == "fp32" else "--s"
            ax.plot(xs, ys, style, label=f"{duration:g} s, {label}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({m.batch_size for m in measurements}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel("average latency per batch (ms)")
        ax.set_title(STAGE_TITLES[stage])
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_config", required=True, help="model config YAML (reference schema)")
    parser.add_argument("--ckpt", default=None, help="checkpoint to load; random weights when omitted")
    parser.add_argument("--ema", action="store_true", help="load the checkpoint's EMA weights")
    config.add_override_argument(parser)
    parser.add_argument(
        "--batch_sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="batch sizes to sweep"
    )
    parser.add_argument(
        "--durations",
        type=float,
        nargs="+",
        default=[2.0, 7.0, 16.7],
        help="audio durations in seconds to sweep (the reference's MAX_DURATION_SEQ)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=sorted(PRECISIONS),
        default=["fp32"],
        help="weight dtypes: fp32, bf16 (faster on CPUs with AVX512-BF16 or AMX), fp16 (model.half(), "
        "CUDA only), int8 (int8 convolutions on CPU, calibrated on the first batch; "
        "jasper.inference.quantize); "
        "with fp32 also run, the other tables get a speed-up column",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        default=["torch"],
        help="inference engines: torch (eager PyTorch), onnxruntime (the exported graph in ONNX Runtime on "
        "the CPU, fp32 or int8 static quantization calibrated on the first batch; needs .[export]); each "
        "engine runs each precision it supports, and the tables get the speed-up over torch fp32",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time each PyTorch float precision through torch.compile (inductor, bucketed lengths: "
        "jasper.graphs); its tables give the speed-up over eager and the shapes compiled",
    )
    parser.add_argument(
        "--cuda_graphs",
        action="store_true",
        help="also time each PyTorch float precision replayed from CUDA graphs (batches up to 8, bucketed "
        "lengths, static buffers; CUDA only)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per configuration (default: 500 on CUDA, 20 on CPU)",
    )
    parser.add_argument(
        "--warmup_steps",
        type=int,
        default=None,
        help="untimed steps before the timed ones (default: 10 on CUDA, 3 on CPU)",
    )
    parser.add_argument(
        "--no_pad_to_max_duration",
        dest="pad_to_max_duration",
        action="store_false",
        help="do not pad features to the fixed length of the duration (matters for manifest input only)",
    )
    parser.add_argument("--dataset_dir", default=None, help="root that manifest audio paths are relative to")
    parser.add_argument(
        "--val_manifests",
        nargs="+",
        default=None,
        help="time real utterances (at most DURATION long) from these manifests instead of synthetic audio",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available, else cpu"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--cudnn_benchmark", action="store_true", help="let cuDNN pick the fastest algorithms"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and synthetic audio")
    parser.add_argument(
        "-o", "--output_dir", default="results", help="where infer_benchmark.json and .png are written"
    )
    parser.add_argument(
        "--name", default="infer_benchmark", help="file name stem of the JSON and PNG (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    from jasper.checkpoint import load_weights
    from jasper.model import Jasper

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise config.ConfigError("--device cuda was asked for, but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    steps, warmup = DEFAULT_STEPS[device.type]
    steps = steps if args.steps is None else args.steps
    warmup = warmup if args.warmup_steps is None else args.warmup_steps
    precisions = list(args.precisions)
    if "fp16" in precisions and device.type != "cuda":
        log.warning("fp16 is CUDA only; skipping it on %s", device)
        precisions = [p for p in precisions if p != "fp16"] or ["fp32"]
    if "int8" in precisions and device.type != "cpu":
        log.warning("int8 is CPU only; skipping it on %s", device)
        precisions = [p for p in precisions if p != "int8"] or ["fp32"]
    precisions.sort(key=lambda p: p != "fp32")  # fp32 first: the baseline of the speed-up columns
    paths = []
    for engine in dict.fromkeys(args.engines):
        for precision in precisions:
            if engine == "onnxruntime" and precision not in ORT_PRECISIONS:
                log.warning("onnxruntime runs fp32 and int8; skipping %s", precision)
                continue
            engines.check(engine, precision, device)
            paths.append((engine, precision))
    # CUDA graphs first: they capture in seconds, where a compile takes minutes on a GPU too.
    graphed = ["cuda-graphs"] * args.cuda_graphs + ["compile"] * args.compile
    if args.cuda_graphs and device.type != "cuda":
        log.warning("CUDA graphs need CUDA; skipping them on %s", device)
        graphed.remove("cuda-graphs")
    if "compile" in graphed and graphs.compiler_problem(device):
        raise config.ConfigError(graphs.compiler_problem(device))
    paths += [(how, p) for how in graphed for p in precisions if p != "int8"]

    torch.manual_seed(args.seed)
    cfg = config.load(args.model_config, args.override_config)
    tokenizer = Tokenizer(cfg["labels"])
    model = Jasper.from_config(cfg)
    if args.ckpt:
        load_weights(model, args.ckpt, ema=args.ema)
    model.eval().to(device)
    fb = config.section(cfg, "input_val", "filterbank_features")
    sample_rate = fb["sample_rate"]

    measurements: list[Measurement] = []
    # each precision is cast from the fp32 weights, not from the last precision's
    fp32_weights = {k: v.clone() for k, v in model.state_dict().items()} if len(paths) > 1 else None
    for engine, precision in paths:
        if fp32_weights is not None:
            model.load_state_dict(fp32_weights)
        model.to(inference_dtype(precision, device))  # bf16 on a CPU that emulates it: a warning
        run_model = model if engine == "torch" and precision != "int8" else None
        if engine in GRAPHS:
            run_model = engines.graphed(model, engine, device, precision)
        for duration in args.durations:
            feats = FilterbankFeatures(
                **fb | {"pad_to_max_duration": args.pad_to_max_duration, "max_duration": duration}
            )
            feats.eval().to(device)
            for bs in args.batch_sizes:
                if args.val_manifests:
                    batches = manifest_batches(
                        cfg, args.dataset_dir or ".", args.val_manifests, bs, duration, tokenizer
                    )
                else:
                    batches = synthetic_batches(bs, duration, sample_rate, args.seed)
                if run_model is None:  # int8 and ONNX Runtime: built once, on the first batch
                    audio, audio_lens = next(batches)
                    first = [feats(audio.to(device), audio_lens.to(device))]
                    run_model = engines.prepare(model, engine, precision, first, threads=args.threads)
                dnn, e2e, frames = measure(
                    run_model, feats, tokenizer, batches, steps, warmup, device, PRECISIONS[precision]
                )
                m = Measurement(precision, bs, duration, frames, dnn, e2e, engine)
                m.compiles = getattr(run_model, "compiles", 0)
                m.compile_seconds = getattr(run_model, "compile_seconds", 0.0)
                measurements.append(m)
                print(
                    f"{m.label} bs={bs} dur={duration:g}s frames={frames}: "
                    f"dnn avg {m.dnn.mean:.2f} ms, e2e avg {m.e2e.mean:.2f} ms",
                    flush=True,
                )
    info = machine_info(device)
    print()
    print(
        f"{cfg.get('name', 'model')} ({args.model_config}) on {info['device_name']}, torch {info['torch']}, "
        f"{info['threads']} threads"
    )
    print()
    print(report(measurements))
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{args.name}.json", out_dir / f"{args.name}.png"
    record = {
        "machine": info,
        "settings": {
            "model_config": str(args.model_config),
            "checkpoint": args.ckpt,
            "ema": args.ema,
            "steps": steps,
            "warmup_steps": warmup,
            "pad_to_max_duration": args.pad_to_max_duration,
            "engines": list(dict.fromkeys(args.engines)),
            "input": "manifests" if args.val_manifests else "synthetic",
            "val_manifests": args.val_manifests,
            "seed": args.seed,
        },
        "results": [m.to_json() for m in measurements],
    }
    json_path.write_text(json.dumps(record, indent=1, allow_nan=True) + "\n")
    plot(measurements, png_path)
    print(f"\nwrote {json_path} and {png_path}")
    return 0 if all(math.isfinite(m.dnn.mean) for m in measurements) else 1
