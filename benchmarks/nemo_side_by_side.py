"""jasper beside NVIDIA NeMo on the same QuartzNet 15x5 weights and audio, in one process on this CPU.

    bash scripts/setup_nemo.sh
    .venv-nemo/bin/python benchmarks/nemo_side_by_side.py [--rounds 5] [--threads 2] [--json F] [--avx2]

NeMo builds QuartzNet 15x5 (its published configuration, random weights with random BatchNorm
statistics) and saves it with `save_to()`; jasper loads that `.nemo` as a user would
(`jasper.load_model`). Before timing, the script checks that both give the same log-probs.

Timed, features plus model, fp32, `--threads` threads: inference at 1 x 2 s, 8 x 7 s and 1 x 16.7 s
(NeMo eager; jasper eager, ONNX Runtime fp32, PyTorch int8 and ONNX Runtime int8), and one training
step at 8 x 7 s (forward, CTC loss, backward, SGD update). The systems are timed alternately, several
calls each per round, and the table gives each one's median over all calls and its speed-up over
NeMo; a difference under 2% counts as equal. Real clips from ../shared are tiled to each length
when present, else noise. `--avx2` times, on the same CPU, the code paths that a CPU without AVX-512
and VNNI runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LAYOUT = REPO / "tests" / "fixtures" / "nemo" / "quartznet15x5_layout.json"
CLIPS = REPO.parent / "shared" / "data" / "librispeech-real-mini"
SHAPES = [(1, 2.0), (8, 7.0), (1, 16.7)]
EQUAL = 0.02
AVX2_CAPS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def audio_batch(batch: int, seconds: float, rate: int = 16000) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` rows of `seconds` of speech (real clips tiled) or, without ../shared, of noise."""
    samples = int(seconds * rate)
    clips = sorted(CLIPS.glob("*/*/*/*.flac"))
    if not clips:
        return 0.1 * torch.randn(batch, samples), torch.full((batch,), samples)
    import soundfile as sf

    rows = []
    for i in range(batch):
        audio = torch.from_numpy(sf.read(clips[i % len(clips)], dtype="float32")[0])
        rows.append(audio.repeat(samples // len(audio) + 1)[:samples])
    return torch.stack(rows), torch.full((batch,), samples)


def nemo_model(seed: int = 0):
    from nemo.collections.asr.models import EncDecCTCModel
    from omegaconf import OmegaConf

    cfg = json.loads(LAYOUT.read_text())["config"]
    cfg = {k: cfg[k] for k in ("sample_rate", "labels", "preprocessor", "encoder", "decoder")}
    torch.manual_seed(seed)
    model = EncDecCTCModel(cfg=OmegaConf.create(cfg))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def timed(fn: Callable[[], object], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of alternation (default 5)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per system per round (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--no_train", action="store_true", help="skip the training step")
    parser.add_argument("--no_infer", action="store_true", help="skip the inference timings")
    parser.add_argument("--no_ort", action="store_true", help="skip the ONNX Runtime paths")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--avx2",
        action="store_true",
        help="time the code paths of a CPU without AVX-512 or VNNI: rerun with PyTorch, oneDNN, FBGEMM and "
        f"MKL capped at AVX2 ({' '.join(f'{k}={v}' for k, v in AVX2_CAPS.items())}); ONNX Runtime cannot be "
        "capped, so its columns are left out",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only profile jasper int8 (PyTorch) at 1 x 2 s, model only: its ops by self CPU time",
    )
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="only time a depthwise convolution as PyTorch's 1-D kernel and as jasper runs it (channels-last "
        "2-D), at QuartzNet's shapes; needs no NeMo",
    )
    args = parser.parse_args()
    if args.avx2:
        if any(os.environ.get(k) != v for k, v in AVX2_CAPS.items()):
            os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_CAPS})
        args.no_ort = True
    torch.set_num_threads(args.threads)
    if args.kernels:
        depthwise_kernels()
        return

    import nemo

    import jasper
    from jasper.inference import engines, quantize
    from jasper.training.loss import ctc_loss

    nemo_asr = nemo_model()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "quartznet15x5.nemo"
        nemo_asr.save_to(str(path))
        pipe = jasper.load_model(path, device="cpu")
    features, model = pipe.features, pipe.model

    x, lens = audio_batch(1, 7.0)
    with torch.inference_mode():
        theirs, their_lens, _ = nemo_asr(input_signal=x, input_signal_length=lens)
        ours, our_lens = model(*features(x, lens))
    n = int(their_lens[0])
    gap = (ours[0, : n - 1].exp() - theirs[0, : n - 1].exp()).abs().max().item()
    print(f"NeMo {nemo.__version__}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"int8 with{'' if quantize.has_vnni() else 'out'} VNNI, {args.threads} threads; same weights: "
          f"{int(our_lens[0])} vs {n} frames, max |p - p_NeMo| = {gap:.2e}")  # fmt: skip

    def calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
        cx, cl = audio_batch(4, 7.0)
        with torch.inference_mode():
            return [features(cx, cl)]

    systems: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {}

    def nemo_infer(a: torch.Tensor, n: torch.Tensor) -> object:
        return nemo_asr(input_signal=a, input_signal_length=n)

    def with_acoustic(acoustic: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], object]:
        def run(a: torch.Tensor, n: torch.Tensor) -> object:
            return acoustic(*features(a, n))

        return run

    systems["NeMo fp32"] = nemo_infer
    systems["jasper fp32 (PyTorch)"] = with_acoustic(model)
    if not args.no_infer:
        print("preparing jasper int8 (PyTorch)...", file=sys.stderr)
        int8 = engines.prepare(model, "torch", "int8", calibration())
        systems["jasper int8 (PyTorch)"] = with_acoustic(int8)
        if args.profile:
            profile(int8, features)
            return
    if not args.no_ort and not args.no_infer:
        print("exporting to ONNX Runtime fp32 and int8 (a few minutes the first time)...", file=sys.stderr)
        ort32 = engines.prepare(model, "onnxruntime", "fp32", threads=args.threads)
        ort8 = engines.prepare(model, "onnxruntime", "int8", calibration(), threads=args.threads)
        torch.set_num_threads(args.threads)  # the ONNX Runtime wrapper lowers PyTorch's threads
        systems["jasper fp32 (ONNX Runtime)"] = with_acoustic(ort32)
        systems["jasper int8 (ONNX Runtime)"] = with_acoustic(ort8)

    results: dict[str, dict[str, float]] = {}
    for batch, seconds in [] if args.no_infer else SHAPES:
        shape = f"{batch} x {seconds:g} s"
        a, n = audio_batch(batch, seconds)
        times: dict[str, list[float]] = {name: [] for name in systems}
        with torch.inference_mode():
            for fn in systems.values():  # warm-up
                fn(a, n)
            for _ in range(args.rounds):
                for name, fn in systems.items():
                    time.sleep(0.3)  # let the other runtime's spinning threads go to sleep
                    times[name] += timed(lambda fn=fn, a=a, n=n: fn(a, n), args.calls)
        results[shape] = {name: 1000 * statistics.median(t) for name, t in times.items()}
        row = ", ".join(f"{k} {v:.1f} ms" for k, v in results[shape].items())
        print(f"  {shape}: {row}", file=sys.stderr)

    if not args.no_train:
        results["train step 8 x 7 s"] = train_step(pipe, ctc_loss, args)

    print()
    print("| shape | " + " | ".join(systems) + " |")
    print("|---|" + "---:|" * len(systems))
    for shape, row in results.items():
        base = row["NeMo fp32"]
        cells = []
        for name in systems:
            if name not in row:
                cells.append("-")
                continue
            speedup = base / row[name]
            tag = "equal" if abs(speedup - 1) < EQUAL else f"{speedup:.2f}x"
            cells.append(f"{row[name]:.1f} ms ({tag})" if name != "NeMo fp32" else f"{row[name]:.1f} ms")
        print(f"| {shape} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


def depthwise_kernels() -> None:
    """Median ms of one depthwise convolution, plain 1-D and through `MaskedConv1d` (which runs it as a
    channels-last 2-D one on a CPU), and the largest difference between them."""
    import torch.nn.functional as F

    from jasper.model import MaskedConv1d

    print("| batch x channels x frames, kernel | conv1d | jasper (channels-last conv2d) | max diff |")
    print("|---|---:|---:|---:|")
    shapes = [(1, 256, 100, 33), (1, 512, 100, 63), (8, 256, 352, 33), (8, 512, 352, 63)]
    for batch, channels, frames, k in shapes:
        conv = MaskedConv1d(channels, channels, k, padding=k // 2, groups=channels, bias=False, masked=False)
        x, lens = torch.randn(batch, channels, frames), torch.full((batch,), frames)

        def plain(x=x, conv=conv, k=k, channels=channels) -> torch.Tensor:
            return F.conv1d(x, conv.weight, None, 1, k // 2, 1, channels)

        def ours(x=x, lens=lens, conv=conv) -> torch.Tensor:
            return conv(x, lens)[0]

        with torch.inference_mode():
            diff = (ours() - plain()).abs().max().item()
            times = [1000 * statistics.median(timed(fn, 30)) for fn in (plain, ours)]
        row = f"{batch} x {channels} x {frames}, {k} | {times[0]:.3f} ms | {times[1]:.3f} ms | {diff:.1e}"
        print(f"| {row} |")


def profile(model: torch.nn.Module, features: Callable, calls: int = 10) -> None:
    """torch.profiler's table of `model`'s ops at 1 x 2 s (features made beforehand), and ms per call."""
    from torch.profiler import profile as profiler

    with torch.inference_mode():
        inputs = features(*audio_batch(1, 2.0))
        for _ in range(3):
            model(*inputs)
        with profiler() as prof:
            for _ in range(calls):
                model(*inputs)
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=12))
    print(f"{sum(e.self_cpu_time_total for e in averages) / calls / 1000:.1f} ms per call, profiled")


def train_step(pipe, ctc_loss, args) -> dict[str, float]:
    """Median milliseconds of one training step (forward, CTC loss, backward, SGD) at 8 x 7 s, each
    framework with its own loss, alternating; both start from the same weights."""
    import copy

    x, lens = audio_batch(8, 7.0)
    targets = torch.randint(0, 28, (8, 60))
    target_lens = torch.full((8,), 60)
    theirs = nemo_model().train()  # NeMo's models do not deep-copy: a fresh one, same seed
    ours_model = copy.deepcopy(pipe.model).train()
    ours_features = copy.deepcopy(pipe.features).train()
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=1e-4)
    opt_ours = torch.optim.SGD(ours_model.parameters(), lr=1e-4)

    def nemo_step() -> None:
        log_probs, enc_len, _ = theirs(input_signal=x, input_signal_length=lens)
        loss = theirs.loss(
            log_probs=log_probs, targets=targets, input_lengths=enc_len, target_lengths=target_lens
        )
        loss.backward()
        opt_theirs.step()
        opt_theirs.zero_grad(set_to_none=True)

    def jasper_step() -> None:
        log_probs, out_lens = ours_model(*ours_features(x, lens))
        ctc_loss(log_probs, out_lens, targets, target_lens, 28).mean().backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    steps = {"NeMo fp32": nemo_step, "jasper fp32 (PyTorch)": jasper_step}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        fn()
    for _ in range(args.rounds):
        for name, fn in steps.items():
            time.sleep(0.3)
            times[name] += timed(fn, 1)
    row = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print("  train step: " + ", ".join(f"{k} {v:.0f} ms" for k, v in row.items()), file=sys.stderr)
    return row


if __name__ == "__main__":
    main()
