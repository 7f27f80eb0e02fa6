"""The compute device of a job: threads and TF32 switches, the autocast dtype that --amp and
--amp_dtype give training, and the weight dtype that --precision gives inference.
"""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

import torch

from jasper.config import ConfigError

log = logging.getLogger(__name__)


def configure(args: argparse.Namespace, device: torch.device) -> None:
    """Threads, cuDNN autotuning and TF32 as the flags ask (TF32: NVIDIA's "FP32" figures use it)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True  # "FP32" on Ampere+ is TF32, as in NVIDIA's tables
        torch.backends.cudnn.allow_tf32 = True
    if args.dali_device != "none":
        log.info("--dali_device %s: DALI is not used here; behaving as 'none'", args.dali_device)


def amp_dtype(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision."""
    if not args.amp:
        if args.amp_dtype:
            log.warning("--amp_dtype %s has no effect without --amp", args.amp_dtype)
        return None
    if device.type == "cuda":
        name = args.amp_dtype or "float16"
        log.info("AMP: %s autocast%s", name, " with a GradScaler" if name == "float16" else "")
    else:
        if args.amp_dtype == "float16":
            log.warning("--amp_dtype float16 is not supported on CPU: using bfloat16")
        name = "bfloat16"
        log.info("AMP on CPU: bfloat16 autocast (faster on CPUs with AVX512-BF16 or AMX, slower elsewhere)")
    return getattr(torch, name)


# --precision of `jasper infer`, `transcribe` and `infer-benchmark`: the dtype the weights and the
# features are cast to (the log-softmax runs in float32 whatever it is). A bf16 copy of the weights
# beats bf16 autocast on CPU, which re-casts every weight on every call: jasper10x5dr 1 x 2 s took
# 264 ms against 588 ms (fp32: 512 ms) on cpu-2c (benchmarks/cpu_paths.py, docs/benchmarks.md).
# int8 keeps float32 weights and features: `jasper.inference.quantize` then swaps in int8 convolutions.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's instruction-set flags, from /proc/cpuinfo (empty where there is none)."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def has_native_bf16() -> bool:
    """True on x86 CPUs with bf16 arithmetic (AVX512-BF16 or AMX); False where that is unknown."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


# On a CPU without AVX512-BF16 or AMX, oneDNN emulates bf16 convolutions: jasper10x5dr 1 x 2 s took
# 43.8 s in bf16 against 0.67 s in fp32 on an AVX2-only EPYC (docs/benchmarks.md).
BF16_EMULATED = (
    "--precision bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 convolutions are emulated and "
    "run about 65x slower than fp32 (measured on an AVX2 CPU); use fp32, or int8 for speed"
)


def inference_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of `--precision` on `device`; fp16 needs CUDA (CPUs have no fast fp16 convolution),
    int8 a CPU (PyTorch's int8 convolutions are CPU kernels). bf16 on a CPU that would emulate it
    gets a warning, not an error: it still computes the right thing."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"--precision fp16 needs a CUDA device, not {device}; on CPU use bf16")
    if precision == "int8" and device.type != "cpu":
        raise ConfigError(f"--precision int8 runs on the CPU only, not {device} (add --cpu)")
    if precision == "bf16" and device.type == "cpu" and cpu_flags() and not has_native_bf16():
        log.warning(BF16_EMULATED)
    return PRECISIONS[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in `dtype`, or a no-op when `dtype` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
