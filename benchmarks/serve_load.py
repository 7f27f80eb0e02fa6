"""Load test of the Triton deployment: throughput and latency percentiles against client concurrency.

For each audio duration and each concurrency, `concurrency` clients send one utterance per request
in a closed loop for `--seconds` (perf_analyzer's concurrency mode, with our own asyncio client).
Printed as a table and written as JSON and a PNG plot, with the batch sizes Triton's dynamic
batcher actually formed for the acoustic model in each run (the difference of
`/v2/models/acoustic-model/stats` before and after).

    python benchmarks/serve_load.py --model_config configs/jasper5x3_cpu.yaml --output_dir results/serve

Without `--ckpt` the model has random weights: latency does not depend on the weights. Without
`--repo` the repository is written to a temporary directory (cpu flavour) and the server started
and stopped here; with `--url` an already running server is measured instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from jasper.serving.client import Client
from jasper.serving.server import TritonServer

SAMPLE_RATE = 16000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch_histogram(stats: dict[str, Any], model: str) -> dict[int, int]:
    """Executions per batch size of `model` from Triton's statistics JSON."""
    for entry in stats.get("model_stats", []):
        if entry["name"] == model:
            return {
                int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in entry.get("batch_stats", [])
            }
    return {}


async def measure(
    url: str, protocol: str, audio: np.ndarray, concurrency: int, seconds: float
) -> dict[str, Any]:
    """One closed-loop run; latencies in ms, throughput in requests/s and audio seconds/s."""
    async with Client(url, protocol) as client:
        await asyncio.gather(*(client.transcribe([audio]) for _ in range(concurrency)))  # warm-up
        before = batch_histogram(await client.statistics("acoustic-model"), "acoustic-model")
        latencies: list[float] = []
        failures = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    await client.transcribe([audio])
                except Exception:  # noqa: BLE001 - a failed request is counted, the run goes on
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        after = batch_histogram(await client.statistics("acoustic-model"), "acoustic-model")
    formed = {b: n - before.get(b, 0) for b, n in sorted(after.items()) if n - before.get(b, 0) > 0}
    executions = sum(formed.values())
    lat = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "audio_seconds": len(audio) / SAMPLE_RATE,
        "requests": len(latencies),
        "failures": failures,
        "throughput_rps": len(latencies) / elapsed,
        "rtfx": len(latencies) * len(audio) / SAMPLE_RATE / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p90_ms": float(np.percentile(lat, 90)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        "batch_sizes": formed,
        "mean_batch": sum(b * n for b, n in formed.items()) / executions if executions else None,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| audio s | concurrency | req/s | RTFx | p50 ms | p90 ms | p99 ms | mean batch "
        "| batches formed (size: count) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        formed = ", ".join(f"{b}: {n}" for b, n in r["batch_sizes"].items())
        lines.append(
            f"| {r['audio_seconds']:.0f} | {r['concurrency']} | {r['throughput_rps']:.1f} | {r['rtfx']:.1f} "
            f"| {_ms(r['p50_ms'])} | {_ms(r['p90_ms'])} | {_ms(r['p99_ms'])} "
            f"| {r['mean_batch'] or 0:.2f} | {formed} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(11, 4))
    for seconds in sorted({r["audio_seconds"] for r in rows}):
        sel = [r for r in rows if r["audio_seconds"] == seconds]
        conc = [r["concurrency"] for r in sel]
        ax_t.plot(conc, [r["throughput_rps"] for r in sel], "o-", label=f"{seconds:.0f} s audio")
        for key, style in (("p50_ms", "o-"), ("p99_ms", "x--")):
            ax_l.plot(conc, [r[key] for r in sel], style, label=f"{seconds:.0f} s {key[:3]}")
    for ax, ylabel in ((ax_t, "requests / s"), (ax_l, "latency, ms")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("client concurrency")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Jasper on Triton (cpu flavour): throughput and latency vs concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def build_repo(args: argparse.Namespace, out: Path) -> Path:
    import torch

    from jasper import config
    from jasper.inference import export
    from jasper.model import Jasper
    from jasper.serving.repository import RepoOptions, write_repository

    if args.ckpt:
        cfg, model = export.checkpoint_model(args.ckpt, args.model_config)
    else:
        cfg = config.load(args.model_config)
        torch.manual_seed(0)
        model = Jasper.from_config(cfg).eval()
    opts = RepoOptions(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        max_duration=max(args.durations) + 1,
    )
    return write_repository(cfg, model, out, opts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_config", default="configs/jasper5x3_cpu.yaml", help="model config to serve")
    parser.add_argument("--ckpt", default=None, help="checkpoint (default: random weights)")
    parser.add_argument("--repo", default=None, help="existing repository to serve (default: write one)")
    parser.add_argument(
        "--url", default=None, help="measure a running server at host:port instead of starting one"
    )
    parser.add_argument(
        "--protocol", choices=("http", "grpc"), default="grpc", help="transport (default: grpc)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="levels")
    parser.add_argument("--durations", type=float, nargs="+", default=[2.0, 7.0], help="audio seconds")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument("--max_batch_size", type=int, default=8, help="repository max_batch_size")
    parser.add_argument("--max_queue_delay_us", type=int, default=5000, help="dynamic batcher queue delay")
    parser.add_argument("--output_dir", default="results/serve_benchmark", help="where the JSON and PNG go")
    args = parser.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        url = args.url
        if url is None:
            repo = Path(args.repo) if args.repo else build_repo(args, Path(tmp) / "repo")
            server = TritonServer(
                repo, _free_port(), _free_port(), _free_port(), log_file=Path(tmp) / "server.log"
            )
            server.start()
            url = server.http_url if args.protocol == "http" else server.grpc_url
        rss_start = server.rss() if server else None
        try:
            for seconds in args.durations:
                audio = (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
                for concurrency in args.concurrency:
                    row = asyncio.run(measure(url, args.protocol, audio, concurrency, args.seconds))
                    rows.append(row)
                    print(table([row]).splitlines()[-1], flush=True)
        finally:
            rss_end = server.rss() if server else None
            if server:
                server.stop()
    print()
    print(table(rows))
    report = {
        "model_config": args.model_config,
        "protocol": args.protocol,
        "max_batch_size": args.max_batch_size,
        "max_queue_delay_us": args.max_queue_delay_us,
        "seconds_per_level": args.seconds,
        "server_rss_mib": [round(v / 2**20) for v in (rss_start, rss_end)] if rss_start else None,
        "rows": rows,
    }
    (out / "serve_load.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, out / "serve_load.png")
    print(f"\nwrote {out / 'serve_load.json'} and {out / 'serve_load.png'}")


if __name__ == "__main__":
    main()
