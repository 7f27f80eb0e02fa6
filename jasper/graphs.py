"""The acoustic model as a captured graph: torch.compile and CUDA graphs at bucketed shapes.

Both capture a graph per input shape. Speech has as many shapes as durations, so the time axis
is padded up to a bucket first: 8 evenly spaced lengths per octave, multiples of 16 frames (the
features' `pad_align`), so padding adds at most 12.5% above 128 frames (4.5% on average over
2-17 s), 2-17 s of audio fall in 26 buckets, and a run compiles once per bucket it meets instead of
once per batch. CUDA graphs also pad the batch, to a power of two.

Padding changes nothing a caller sees when the model masks its convolutions
(`use_conv_masks: true`, every shipped config): the frames past each length are zeroed before
every convolution, so the valid log-probs of a padded batch equal the unpadded ones (in eval mode;
in training, BatchNorm's batch statistics also see the extra zero frames, as they see the padding
of every batch). The log-probs returned are cut back to the unpadded number of frames. A model
without masks gets a warning: its last frames would change.
"""

from __future__ import annotations

import logging
import shutil
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from jasper.model import MaskedConv1d, output_stride

log = logging.getLogger(__name__)

ALIGN = 16  # frames: the features' pad_align
PER_OCTAVE = 8


def bucket(frames: int, align: int = ALIGN, per_octave: int = PER_OCTAVE) -> int:
    """The smallest bucket length that holds `frames`: `per_octave` evenly spaced lengths in each
    octave [2^e, 2^(e+1)), multiples of `align` (a float with 3 mantissa bits, for 8 per octave)."""
    if frames <= align:
        return align
    granularity = max(align, (1 << (frames.bit_length() - 1)) // per_octave)
    return -(-frames // granularity) * granularity


def batch_bucket(size: int) -> int:
    """The power of two that holds `size` utterances (CUDA graphs' static batch)."""
    return 1 << max(0, (size - 1).bit_length())


def strided_convs(model: nn.Module) -> list[tuple[int, int, int, int]]:
    """(kernel, stride, dilation, padding) of each strided convolution of `model`, in order."""
    return [
        (m.kernel_size[0], m.stride[0], m.dilation[0], m.padding[0])
        for m in model.modules()
        if isinstance(m, nn.Conv1d) and m.stride[0] > 1
    ]


def output_frames(convs: list[tuple[int, int, int, int]], frames: int) -> int:
    """How many frames a model with these strided convolutions returns for `frames` input frames."""
    for k, s, d, p in convs:
        frames = (frames + 2 * p - d * (k - 1) - 1) // s + 1
    return frames


def compiler_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot build CPU code here (no C++ compiler, no Python headers), or None."""
    if device.type != "cpu":
        return None
    if not (shutil.which("c++") or shutil.which("g++")):
        return "--compile on a CPU needs a C++ compiler (Debian: apt-get install g++)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "--compile on a CPU needs the Python headers (Debian: apt-get install python3-dev)"
    return None


def warn_unmasked(model: nn.Module) -> None:
    """Bucket padding reaches an unmasked model's last frames: say so once, when wrapping it."""
    if any(isinstance(m, MaskedConv1d) and not m.masked for m in model.modules()):
        log.warning(
            "the model does not mask its convolutions (use_conv_masks: false): padding to a length "
            "bucket changes the log-probs of each utterance's last frames"
        )


def pad_time(features: torch.Tensor, frames: int) -> torch.Tensor:
    """`features [B, F, T]` zero-padded on the right to `frames`."""
    return F.pad(features, (0, frames - features.shape[-1])) if frames > features.shape[-1] else features


class Compiled(nn.Module):
    """`torch.compile(model)` (inductor, static shapes) called at bucketed lengths.

    `compiles` counts the shapes met, each one compile (the first call of a shape takes tens of
    seconds on a CPU); `compile_seconds` the time spent in those first calls.
    """

    def __init__(self, model: nn.Module, mode: str | None = None, previous: Compiled | None = None) -> None:
        super().__init__()
        import torch._dynamo

        # Each bucket is a compile of its own: the default limit (8) would send the rest to eager.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 128)
        self.model, self.output_stride, self.convs = model, output_stride(model), strided_convs(model)
        warn_unmasked(model)
        # Not a submodule: the compiled module holds `model` too, and it would count twice.
        object.__setattr__(self, "compiled", torch.compile(model, dynamic=False, mode=mode))
        self.shapes: set[tuple] = set()
        # A new wrapper of the same run (training re-wraps the model when it unfreezes) counts on.
        self.earlier = previous.compiles if previous else 0
        self.compile_seconds = previous.compile_seconds if previous else 0.0

    @property
    def compiles(self) -> int:
        return self.earlier + len(self.shapes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = features.shape[-1]
        padded = pad_time(features, bucket(frames))
        autocast = torch.is_autocast_enabled(padded.device.type)
        # What dynamo guards on besides the shape (an inference-mode tensor is a recompile too).
        modes = (self.model.training, torch.is_grad_enabled(), autocast, padded.is_inference())
        key = (tuple(padded.shape), padded.dtype, *modes)
        new = key not in self.shapes
        started = time.perf_counter()
        log_probs, out_lens = self.compiled(padded, lengths)
        if new:
            seconds = time.perf_counter() - started
            self.shapes.add(key)
            self.compile_seconds += seconds
            log.info("torch.compile: %s compiled in %.1f s (%d shapes)", key[0], seconds, self.compiles)
        return log_probs[:, : output_frames(self.convs, frames)], out_lens


class CudaGraphs(nn.Module):
    """The model replayed from CUDA graphs: one per (batch bucket, length bucket), static buffers.

    At small batches a GPU spends more time launching Jasper's hundreds of kernels than running
    them; a graph launches them all at once. Batches over `max_batch` run eagerly. Inference only
    (no autograd); the outputs are copies, so a later replay does not overwrite them.
    """

    def __init__(self, model: nn.Module, max_batch: int = 8, warmup: int = 2) -> None:
        super().__init__()
        self.model, self.max_batch, self.warmup = model, max_batch, warmup
        self.output_stride, self.convs = output_stride(model), strided_convs(model)
        warn_unmasked(model)
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, tuple]] = {}
        self.pool = None
        self.compile_seconds = 0.0  # warm-up and capture

    @property
    def compiles(self) -> int:
        return len(self.graphs)

    def _capture(self, key: tuple, like: torch.Tensor) -> tuple:
        batch, feats, frames = key[:3]
        static_x = torch.zeros(batch, feats, frames, dtype=like.dtype, device=like.device)
        static_lens = torch.full((batch,), frames, dtype=torch.long, device=like.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up on a side stream: cuDNN picks its kernels here
            for _ in range(self.warmup):
                self.model(static_x, static_lens)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self.model(static_x, static_lens)
        self.pool = graph.pool()  # graphs share one memory pool: they never run at once
        log.info("CUDA graph captured: batch %d x %d frames (%d graphs)", batch, frames, len(self.graphs) + 1)
        return graph, static_x, static_lens, static_out

    @torch.inference_mode()
    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, feats, frames = features.shape
        if batch > self.max_batch or features.device.type != "cuda":
            return self.model(features, lengths)
        key = (batch_bucket(batch), feats, bucket(frames), features.dtype)
        if key not in self.graphs:
            started = time.perf_counter()
            self.graphs[key] = self._capture(key, features)
            self.compile_seconds += time.perf_counter() - started
        graph, static_x, static_lens, (static_log_probs, static_out_lens) = self.graphs[key]
        static_x.zero_()
        static_x[:batch, :, :frames].copy_(features)
        static_lens.fill_(1)  # the padding rows: one frame each, ignored
        static_lens[:batch].copy_(lengths)
        graph.replay()
        keep = output_frames(self.convs, frames)
        return static_log_probs[:batch, :keep].clone(), static_out_lens[:batch].clone()
