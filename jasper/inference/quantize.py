"""int8 inference on CPU: PyTorch's x86 int8 convolutions (VNNI) inside the float model.

BatchNorm is folded into the convolution before it (eval statistics, so the result is the same
function), then every dense `MaskedConv1d` of the encoder (all but QuartzNet's depthwise ones)
becomes an `Int8MaskedConv1d`: it masks its input as before, quantizes it to uint8 with one scale
per tensor, convolves with int8 weights (one scale per output channel) and dequantizes the output.
QuartzNet's 1x1 convolutions, whose inputs come channels-last from a depthwise convolution
(`jasper.model.MaskedConv1d.convolve`), become int8 matrix products over channels that keep that
order, and skip a masking that changes only frames past the lengths: with that, QuartzNet 15x5 int8
went from 1.9-2.5x NeMo's fp32 speed to 3.5-6.6x (docs/benchmarks.md, "NeMo side by side").
Everything between the convolutions (masks, residual sums, ReLU, the decoder and its log-softmax)
stays float32, so the lengths and the valid frames' masking are exactly the float model's.
Activation scales come from a calibration pass over a few real inputs (`quantize(model, batches)`);
on jasper10x5dr 1 x 2 s it ran 3.25x faster than fp32 on cpu-2c (docs/benchmarks.md).

PyTorch 2.13 deprecates its quantized tensors (pytorch/pytorch#184982) and warns once when they
are made; the warning is silenced here, but when they are removed this path moves to torchao.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterable

import torch
import torch.ao.nn.quantized as nnq
from torch import nn
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver, QConfig

from jasper import device
from jasper.model import Jasper, MaskedConv1d, is_channels_last

warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")


def has_vnni() -> bool:
    """Whether this CPU has VNNI (AVX512-VNNI, AVX-VNNI or AMX); False where that is unknown.

    With VNNI, int8 dot products accumulate straight into int32. Without it (AVX2, or AVX-512
    without VNNI), x86 int8 kernels add pairs of uint8 x int8 products in int16 (vpmaddubsw),
    which saturates when activations use all 8 bits: on an AVX2-only CPU, tiny random weights'
    int8 log-probs moved by up to 0.43 from fp32, and by 0.09 with 7-bit activations, which
    such CPUs get (`REDUCED_RANGE`).
    """
    if isa_capped_below_vnni():
        return False
    return bool(device.cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


# The variables that cap the instruction sets of oneDNN (int8 convolutions) and FBGEMM (int8
# matrix products); `benchmarks/nemo_side_by_side.py --avx2` sets them to time an AVX2 CPU's paths.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS")


def isa_capped_below_vnni() -> bool:
    """Whether an environment variable keeps the int8 kernels off VNNI (e.g. `ONEDNN_MAX_CPU_ISA=AVX2`),
    so that they add products in int16 as on a CPU without it."""
    for name in ISA_CAPS:
        value = os.environ.get(name, "").upper()
        if value and value not in ("ALL", "DEFAULT") and not any(t in value for t in ("VNNI", "AMX", "E1")):
            return True
    return False


REDUCED_RANGE = not has_vnni()
QCONFIG = QConfig(
    activation=MinMaxObserver.with_args(
        dtype=torch.quint8, quant_min=0, quant_max=127 if REDUCED_RANGE else 255
    ),
    weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
)


def fold_batchnorm(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> None:
    """Scale `conv`'s weights and give it the bias that make `bn(conv(x)) == conv(x)` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.weight = nn.Parameter((conv.weight * scale[:, None, None]).detach())
    conv.bias = nn.Parameter(bias.detach())


class Int8MaskedConv1d(MaskedConv1d):
    """A `MaskedConv1d` whose convolution runs in int8 once `convert()` has been called; before, it
    runs in float and records the ranges of its input and output."""

    def __init__(self, conv: MaskedConv1d) -> None:
        nn.Module.__init__(self)  # the float weights live in `self.float_conv`, not in this module
        self.float_conv, self.same_length = conv, conv.same_length
        # A 1x1 convolution maps each frame on its own, so masking its input changes only frames past
        # the lengths, which every wider convolution masks again: the valid frames stay the same.
        self.masked = conv.masked and not conv.pointwise
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.dilation, self.padding = conv.dilation, conv.padding
        self.input_observer, self.output_observer = QCONFIG.activation(), QCONFIG.activation()
        self.int8_conv: nnq.Conv1d | nnq.Linear | None = None
        self.input_scale, self.input_zero_point = 1.0, 0
        self.channels_last = False  # whether calibration saw channels-last inputs

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8_conv is None:
            self.channels_last = is_channels_last(x)  # the float path passes the layouts on as int8 will
            return self.output_observer(MaskedConv1d.convolve(self.float_conv, self.input_observer(x)))
        linear = isinstance(self.int8_conv, nnq.Linear)  # a 1x1 convolution, over channels-last frames
        x = x.transpose(1, 2) if linear else x
        q = torch.quantize_per_tensor(x, self.input_scale, self.input_zero_point, torch.quint8)
        out = self.int8_conv(q).dequantize()
        return out.transpose(1, 2) if linear else out

    def convert(self) -> None:
        """Freeze the observed ranges and build the int8 convolution."""
        c = self.float_conv
        scale, zero_point = self.input_observer.calculate_qparams()
        self.input_scale, self.input_zero_point = float(scale), int(zero_point)
        # A 1x1 convolution of channels-last frames (QuartzNet's) is a matrix product over channels
        # that keeps their order; of a [B, C, T] input (Jasper's residual panes) it stays a convolution.
        linear = c.pointwise and self.channels_last
        plain: nn.Conv1d | nn.Linear
        if linear:
            plain = nn.Linear(c.in_channels, c.out_channels)
            plain.weight, plain.bias = nn.Parameter(c.weight[:, :, 0]), c.bias
        else:
            plain = nn.Conv1d(
                c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups
            )
            plain.weight, plain.bias = c.weight, c.bias
        plain.qconfig = QCONFIG
        plain.activation_post_process = self.output_observer
        self.int8_conv = (nnq.Linear if linear else nnq.Conv1d).from_float(plain)


def fold_batchnorms(model: Jasper) -> Jasper:
    """A float32 CPU copy of `model` (eval mode) with every BatchNorm folded into the convolution
    before it and replaced by an Identity: the same function with half the ops. `model` is left as
    it is."""
    folded = copy.deepcopy(model).eval().float().cpu()
    for block in folded.encoder.layers:
        body = getattr(block, block.body_name)
        for i in range(1, len(body)):
            if isinstance(body[i], nn.BatchNorm1d) and isinstance(body[i - 1], MaskedConv1d):
                fold_batchnorm(body[i - 1], body[i])
                body[i] = nn.Identity()
        for pair in block.res:
            fold_batchnorm(pair[0], pair[1])
            pair[1] = nn.Identity()
    return folded


def quantize(model: Jasper, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Jasper:
    """An int8 copy of `model` (eval mode, CPU), its activation ranges calibrated on `batches` of
    (features, lengths) as the model receives them. `model` itself is left as it is."""
    if "x86" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "x86"
    q = fold_batchnorms(model)
    for block in q.encoder.layers:
        body = getattr(block, block.body_name)
        for i, layer in enumerate(body):
            # Depthwise convolutions (QuartzNet's separable blocks) stay float: PyTorch's int8 kernels
            # for them ran 8-11x slower than fp32 (docs/benchmarks.md, "NeMo side by side").
            if isinstance(layer, MaskedConv1d) and layer.groups == 1:
                body[i] = Int8MaskedConv1d(layer)
        for pair in block.res:
            pair[0] = Int8MaskedConv1d(pair[0])
    seen = 0
    with torch.inference_mode():
        for features, lengths in batches:
            q(features.float().cpu(), lengths.cpu())
            seen += 1
    if seen == 0:
        raise ValueError("int8 calibration needs at least one batch")
    for module in q.modules():
        if isinstance(module, Int8MaskedConv1d):
            module.convert()
    return q
