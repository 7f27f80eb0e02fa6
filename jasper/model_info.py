"""Print a config's model: blocks, parameters, receptive field, output frame rate and GFLOPs.

GFLOPs count 2 x multiply-accumulates of every convolution (main path, residual panes, decoder)
per second of 16 kHz audio (100 feature frames); BatchNorm and activations are ignored.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from torch import nn

from jasper import config
from jasper.model import Jasper, MaskedConv1d


@dataclass
class BlockInfo:
    index: int
    filters: int
    repeat: int
    kernel: int
    stride: int
    dilation: int
    panes: int
    params: int
    gflops_per_s: float


@dataclass
class ModelInfo:
    blocks: list[BlockInfo]
    params: int
    receptive_field_frames: int
    frame_rate_in: float
    frame_rate_out: float
    gflops_per_s: float


def _conv_flops(conv: nn.Conv1d, frames_per_s: float) -> float:
    macs = conv.in_channels // conv.groups * conv.out_channels * conv.kernel_size[0]
    return 2.0 * macs * frames_per_s


def describe(model: Jasper, window_stride: float = 0.01) -> ModelInfo:
    """Walk the encoder once, tracking stride, to get the receptive field and FLOPs per second."""
    frame_rate = 1.0 / window_stride
    receptive, jump = 1, 1
    blocks, total_flops = [], 0.0
    for i, block in enumerate(model.encoder.layers):
        body = [m for m in getattr(block, block.body_name) if isinstance(m, MaskedConv1d)]
        flops = 0.0
        for conv in body:
            k_eff = conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
            receptive += (k_eff - 1) * jump
            jump *= conv.stride[0]
            flops += _conv_flops(conv, frame_rate / jump)
        for conv, _bn in block.res:
            flops += _conv_flops(conv, frame_rate / jump)
        main = body[0] if body[0].groups == 1 else body[1]
        blocks.append(
            BlockInfo(
                i,
                main.out_channels,
                sum(1 for c in body if c.groups == 1),
                body[0].kernel_size[0],
                body[0].stride[0],
                body[0].dilation[0],
                len(block.res),
                sum(p.numel() for p in block.parameters()),
                flops / 1e9,
            )
        )
        total_flops += flops
    total_flops += _conv_flops(model.decoder.layers[0], frame_rate / jump)
    return ModelInfo(
        blocks,
        sum(p.numel() for p in model.parameters()),
        receptive,
        frame_rate,
        frame_rate / jump,
        total_flops / 1e9,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="model config YAML (reference schema)")
    config.add_override_argument(parser)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config, args.override_config)
    model = Jasper.from_config(cfg)
    stride = config.section(cfg, "input_val", "filterbank_features")["window_stride"]
    info = describe(model, stride)
    print(f"{cfg.get('name', 'model')} from {args.config}")
    print(
        f"{'block':>5} {'filters':>7} {'repeat':>6} {'kernel':>6} {'stride':>6} {'dil':>3} {'panes':>5} "
        f"{'params':>12} {'GFLOP/s':>8}"
    )
    for b in info.blocks:
        print(
            f"{b.index:>5} {b.filters:>7} {b.repeat:>6} {b.kernel:>6} {b.stride:>6} {b.dilation:>3} "
            f"{b.panes:>5} {b.params:>12,} {b.gflops_per_s:>8.3f}"
        )
    print(f"parameters:        {info.params:,}")
    print(
        f"receptive field:   {info.receptive_field_frames} feature frames "
        f"({info.receptive_field_frames * stride:.2f} s)"
    )
    print(f"frame rate:        {info.frame_rate_in:g} frames/s in, {info.frame_rate_out:g} frames/s out")
    print(f"compute:           {info.gflops_per_s:.2f} GFLOPs per second of audio")
    return 0
