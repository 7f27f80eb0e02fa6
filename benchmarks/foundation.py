"""Foundation speed: feature extraction and jasper10x5dr forward time on this machine.

Prints, in one run: the machine's fp32 GEMM rate (the yardstick), the time to extract features
for a batch of 32 x 16.7 s utterances (vectorised, against the reference's loop over utterances
for normalisation and against a full per-utterance loop), and the model's forward time at batch
1 x 2 s and 8 x 2 s with the GFLOP/s it reaches.

    python benchmarks/foundation.py [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse
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


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
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
    mean = torch.zeros(x.shape[:2])
    std = torch.zeros(x.shape[:2])
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load(CONFIG)
    results: dict[str, float | str | int] = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
    }
    results["gemm_gflops"] = gemm_gflops()
    print(f"fp32 GEMM (4096^3):                    {results['gemm_gflops']:.1f} GFLOP/s")

    features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features")).eval()
    audio = torch.randn(32, 267200) * 0.1
    lens = torch.randint(160000, 267201, (32,))
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
    print(
        f"features, 32 x 16.7 s, per utterance:  {t_loop * 1000:.1f} ms ({t_loop / t_batch:.1f}x)"
    )
    print(
        f"features, 32 x 16.7 s, reference-style: {t_ref * 1000:.1f} ms ({t_ref / t_batch:.1f}x)"
    )
    print(
        f"normalisation alone, vectorised:       {t_norm_vec * 1000:.2f} ms "
        f"(reference-style loop {t_norm_loop * 1000:.2f} ms, {t_norm_loop / t_norm_vec:.1f}x slower)"
    )

    model = Jasper.from_config(cfg).eval()
    gflops_per_audio_s = describe(model).gflops_per_s
    for batch, seconds in ((1, 2), (8, 2)):
        frames_in = features.output_frames(seconds * 16000)
        x = torch.randn(batch, 64, frames_in)
        x_lens = torch.full((batch,), frames_in)
        with torch.inference_mode():
            t = timed(lambda x=x, x_lens=x_lens: model(x, x_lens), args.repeats)
        rate = gflops_per_audio_s * batch * frames_in / 100 / t
        results[f"forward_{batch}x{seconds}s_s"] = t
        results[f"forward_{batch}x{seconds}s_gflops"] = rate
        print(
            f"jasper10x5dr forward, {batch} x {seconds} s:      {t:.3f} s ({rate:.1f} GFLOP/s, "
            f"{rate / results['gemm_gflops'] * 100:.0f}% of GEMM)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
