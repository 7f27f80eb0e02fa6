"""Foundation speed: feature extraction and jasper10x5dr forward time on this machine.

Prints, in one run: the machine's fp32 GEMM rate (the yardstick), the time to extract features
for a batch of 32 x 16.7 s utterances (vectorised, against the reference's loop over utterances
for normalisation and against a full per-utterance loop), and the model's forward time at batch
1 x 2 s and 8 x 2 s with the GFLOP/s it reaches. On CUDA (`--device cuda`) the GEMM yardstick is
TF32 and bf16, and the forward is also timed at 32 x 16.7 s and under fp16 autocast.

    python benchmarks/foundation.py [--threads N] [--repeats R] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from jasper import config
from jasper.features import FilterbankFeatures, normalize_batch
from jasper.model import Jasper
from jasper.model_info import describe

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "jasper10x5dr_speedp-online_speca.yaml"


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` in seconds (GPU work finished before each clock read)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(n: int = 4096, repeats: int = 5, device: str = "cpu", dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: torch.mm(a, b), repeats, warmup=2) / 1e9


def reference_style_features(
    features: FilterbankFeatures, audio: torch.Tensor, lens: torch.Tensor
) -> torch.Tensor:
    """The reference's order of work: whole-batch STFT, then a Python loop over utterances to normalise."""
    x = torch.cat([audio[:, :1], audio[:, 1:] - 0.97 * audio[:, :-1]], dim=1)
    spec = torch.stft(
        x,
        features.n_fft,
        features.hop_length,
        features.win_length,
        window=features.window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    mel = torch.log(torch.matmul(features.fb, torch.view_as_real(spec).pow(2).sum(-1)) + 1e-20)
    return reference_style_normalize(mel, torch.ceil(lens / features.hop_length).int())


def reference_style_normalize(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The reference's per-utterance Python loop for per_feature normalisation (for comparison)."""
    mean = torch.zeros(x.shape[:2], device=x.device)
    std = torch.zeros(x.shape[:2], device=x.device)
    for i in range(x.shape[0]):
        mean[i] = x[i, :, : lengths[i]].mean(dim=1)
        std[i] = x[i, :, : lengths[i]].std(dim=1)
    return (x - mean[..., None]) / (std[..., None] + 1e-5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    cfg = config.load(CONFIG)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if dev == "cuda":
        machine = torch.cuda.get_device_name()
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    results: dict[str, float | str | int] = {"machine": machine, "torch": torch.__version__}
    results["gemm_gflops"] = gemm_gflops(8192 if dev == "cuda" else 4096, device=dev)
    print(f"fp32 GEMM ({'TF32' if dev == 'cuda' else 'IEEE'}): {results['gemm_gflops']:.1f} GFLOP/s")
    if dev == "cuda":
        results["gemm_bf16_gflops"] = gemm_gflops(8192, device=dev, dtype=torch.bfloat16)
        print(f"bf16 GEMM: {results['gemm_bf16_gflops']:.1f} GFLOP/s")

    features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features")).eval().to(dev)
    audio = torch.randn(32, 267200, device=dev) * 0.1
    lens = torch.randint(160000, 267201, (32,), device=dev)
    lens[0] = 267200
    with torch.inference_mode():
        t_batch = timed(lambda: features(audio, lens), args.repeats)
        t_loop = timed(lambda: [features(audio[i : i + 1, : lens[i]], lens[i : i + 1]) for i in range(32)], 3)
        t_ref = timed(lambda: reference_style_features(features, audio, lens), 3)
        mel, frames = features(audio, lens)
        t_norm_vec = timed(lambda: normalize_batch(mel, frames, "per_feature"), args.repeats)
        t_norm_loop = timed(lambda: reference_style_normalize(mel, frames), args.repeats)
    results.update(
        features_batch_s=t_batch,
        features_loop_s=t_loop,
        norm_vectorised_s=t_norm_vec,
        norm_loop_s=t_norm_loop,
    )
    print(f"features, 32 x 16.7 s, batched:        {t_batch * 1000:.1f} ms")
    print(f"features, 32 x 16.7 s, per utterance:  {t_loop * 1000:.1f} ms ({t_loop / t_batch:.1f}x)")
    print(f"features, 32 x 16.7 s, reference-style: {t_ref * 1000:.1f} ms ({t_ref / t_batch:.1f}x)")
    print(
        f"normalisation alone, vectorised:       {t_norm_vec * 1000:.2f} ms "
        f"(reference-style loop {t_norm_loop * 1000:.2f} ms, {t_norm_loop / t_norm_vec:.1f}x slower)"
    )

    model = Jasper.from_config(cfg).eval()
    gflops_per_audio_s = describe(model).gflops_per_s
    model.to(dev)
    shapes = ((1, 2), (8, 2)) if dev == "cpu" else ((1, 2), (8, 2), (32, 16.7))
    precisions = ("fp32",) if dev == "cpu" else ("fp32", "fp16")
    for precision in precisions:
        for batch, seconds in shapes:
            frames_in = features.output_frames(int(seconds * 16000))
            x = torch.randn(batch, 64, frames_in, device=dev)
            x_lens = torch.full((batch,), frames_in, device=dev)
            autocast = (
                torch.autocast("cuda", dtype=torch.float16)
                if precision == "fp16"
                else contextlib.nullcontext()
            )
            with torch.inference_mode(), autocast:
                t = timed(lambda x=x, x_lens=x_lens: model(x, x_lens), args.repeats, warmup=3)
            rate = gflops_per_audio_s * batch * frames_in / 100 / t
            name = (
                f"forward_{precision}_{batch}x{seconds:g}s"
                if dev == "cuda"
                else f"forward_{batch}x{seconds}s"
            )
            results[f"{name}_s"] = t
            results[f"{name}_gflops"] = rate
            print(
                f"jasper10x5dr forward {precision}, {batch} x {seconds:g} s: {t * 1000:.2f} ms "
                f"({rate:.1f} GFLOP/s, {rate / results['gemm_gflops'] * 100:.0f}% of the fp32 GEMM)"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
