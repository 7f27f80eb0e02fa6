"""The Jasper acoustic model (and its separable sibling QuartzNet), built from a config dict.

Module names follow NVIDIA's so that their published state_dicts load with `strict=True`:
`encoder.layers.N.conv.*` (QuartzNet: `mconv.*`), `encoder.layers.N.res.K.{0,1}.*` and
`decoder.layers.0.*`. A model built with `use_conv_masks: true` zeroes every convolution's input
beyond each utterance's length, so a short utterance in a padded batch gives the same log-probs
as alone. Every model returns `(log_probs [B, T, C], out_lens [B])`; the reference's unmasked
variant returned a bare tensor, which broke its training script (spec 12.15).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from jasper.config import model_config, model_section_name

BN_EPS = 1e-3
BN_MOMENTUM = 0.1
# In place: each activation's input is a fresh tensor (a BatchNorm output or a residual sum) that
# nothing else reads, and writing over it saves a pass over memory (measured: docs/benchmarks.md,
# "NeMo side by side").
ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "selu": lambda: nn.SELU(inplace=True),
    "hardtanh": lambda: nn.Hardtanh(0.0, 20.0, inplace=True),
}


def conv_output_lengths(
    lens: torch.Tensor, kernel: int, stride: int, dilation: int, padding: int
) -> torch.Tensor:
    """`floor((len + 2*pad - dil*(k-1) - 1) / stride) + 1` as int64 (Jasper's floor rule)."""
    numer = lens.long() + 2 * padding - dilation * (kernel - 1) - 1
    return torch.div(numer, stride, rounding_mode="floor") + 1


def output_stride(model: nn.Module) -> int:
    """Feature frames per output frame: the product of all convolution strides.

    Residual and decoder convolutions have stride 1 in every Jasper/QuartzNet config (a strided
    residual would not fit its block's output), so this is the main path's downsampling. A model
    that hides or wraps its modules (`jasper.inference.engines.OrtAcousticModel`,
    `jasper.graphs.Compiled`) states it as `output_stride`.
    """
    if isinstance(getattr(model, "output_stride", None), int):
        return model.output_stride
    return math.prod(m.stride[0] for m in model.modules() if isinstance(m, nn.Conv1d))


def _exporting() -> bool:
    """Whether this forward is being traced for ONNX or TorchScript export."""
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def length_mask(lens: torch.Tensor, size: int) -> torch.Tensor:
    """`[B, 1, size]` bool, True on each utterance's valid frames."""
    return (torch.arange(size, device=lens.device)[None, :] < lens[:, None])[:, None, :]


Masks = dict[tuple[int, torch.dtype], tuple[torch.Tensor, torch.Tensor]]


def frame_mask(lens: torch.Tensor, x: torch.Tensor, masks: Masks | None = None) -> torch.Tensor:
    """`length_mask` for `x`'s frames, in `x`'s dtype, to multiply by.

    `masks` memoises it for one forward: the lengths change only at strided convolutions, so
    QuartzNet 15x5's 78 masked convolutions need 2 masks, and building each (arange, compare, cast)
    cost about 4% of int8 inference at 1 x 2 s. An entry holds its lengths tensor and is used only
    for that very tensor.
    """
    key = (x.shape[-1], x.dtype)
    if torch.compiler.is_compiling() or not isinstance(key[0], int):
        masks = None  # a compiler shares equal subexpressions itself (and dynamo would break the graph)
    if masks is not None and key in masks and masks[key][0] is lens:
        return masks[key][1]
    mask = length_mask(lens, x.shape[-1]).to(x.dtype)
    if masks is not None:
        masks[key] = (lens, mask)
    return mask


class MaskedConv1d(nn.Conv1d):
    """Conv1d that zeroes input frames beyond each length (when `masked`) and returns new lengths."""

    def __init__(self, *args, masked: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.masked = masked
        k, s, d, p = self.kernel_size[0], self.stride[0], self.dilation[0], self.padding[0]
        self.same_length = s == 1 and 2 * p == d * (k - 1)
        self.depthwise = self.groups > 1 and self.groups == self.in_channels == self.out_channels
        self.pointwise = k == 1 and s == 1 and p == 0 and self.groups == 1

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, lens: torch.Tensor, masks: Masks | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.masked:  # a product, not masked_fill: one pass over the activations instead of two
            x = x * frame_mask(lens, x, masks)
        if self.same_length:
            out_lens = lens.long()
        else:
            out_lens = conv_output_lengths(
                lens, self.kernel_size[0], self.stride[0], self.dilation[0], self.padding[0]
            )
        return self.convolve(x), out_lens

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of the masked input (`jasper.inference.quantize` swaps in an int8 one).

        On a CPU, QuartzNet's separable blocks run in channels-last order (frames outer, channels
        inner), which oneDNN's depthwise kernel wants: a depthwise convolution runs as a 2-D one on
        a channels-last view and hands its output on in that order, and a 1x1 convolution of such an
        input is a matrix product over channels that keeps it (`is_channels_last`). With BatchNorm
        folded (int8) only the model's first depthwise convolution copies; in float each BatchNorm
        hands back `[B, C, T]`. The numbers are the 1-D convolutions' to float rounding, 3-7x faster
        for the depthwise ones (docs/benchmarks.md, "NeMo side by side").
        Exported graphs keep the plain 1-D convolutions.
        """
        if x.device.type != "cpu" or _exporting():
            return super().forward(x)
        if self.depthwise:
            x2 = x[:, :, None, :].contiguous(memory_format=torch.channels_last)
            out = F.conv2d(
                x2,
                self.weight[:, :, None, :],
                self.bias,
                (1, self.stride[0]),
                (0, self.padding[0]),
                (1, self.dilation[0]),
                self.groups,
            )
            return out[:, :, 0, :]
        if self.pointwise and is_channels_last(x):
            return F.linear(x.transpose(1, 2), self.weight[:, :, 0], self.bias).transpose(1, 2)
        return super().forward(x)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether `[B, C, T]` is stored frame by frame, channels inner (as a depthwise output on a CPU)."""
    return x.dim() == 3 and x.shape[1] > 1 and x.transpose(1, 2).is_contiguous()


def _bn(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class JasperBlock(nn.Module):
    """`repeat` x (conv, BN, activation, dropout), plus residual 1x1 conv + BN panes.

    `pane_channels` lists the widths of the earlier outputs summed in as residuals: one pane (the
    block input) for a plain residual block, all earlier block outputs for a dense one.
    """

    def __init__(
        self,
        in_channels: int,
        filters: int,
        repeat: int,
        kernel_size: int,
        stride: int,
        dilation: int,
        dropout: float,
        activation: str,
        pane_channels: list[int],
        separable: bool,
        masked: bool,
        quartznet_names: bool = False,
    ) -> None:
        super().__init__()
        padding = (kernel_size // 2) * dilation
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(repeat):
            if separable and kernel_size > 1:
                layers.append(
                    MaskedConv1d(
                        channels,
                        channels,
                        kernel_size,
                        stride=stride,
                        dilation=dilation,
                        padding=padding,
                        groups=channels,
                        bias=False,
                        masked=masked,
                    )
                )
                layers.append(MaskedConv1d(channels, filters, 1, bias=False, masked=masked))
            else:
                layers.append(
                    MaskedConv1d(
                        channels,
                        filters,
                        kernel_size,
                        stride=stride,
                        dilation=dilation,
                        padding=padding,
                        bias=False,
                        masked=masked,
                    )
                )
            layers.append(_bn(filters))
            if i < repeat - 1:
                layers += [ACTIVATIONS[activation](), nn.Dropout(dropout)]
            channels = filters
        # QuartzNet's checkpoints name the main path `mconv` and the output `mout`.
        self.body_name, self.out_name = ("mconv", "mout") if quartznet_names else ("conv", "out")
        self.add_module(self.body_name, nn.ModuleList(layers))
        self.res = nn.ModuleList(
            nn.ModuleList([MaskedConv1d(c, filters, 1, bias=False, masked=masked), _bn(filters)])
            for c in pane_channels
        )
        self.add_module(self.out_name, nn.Sequential(ACTIVATIONS[activation](), nn.Dropout(dropout)))

    def forward(
        self, xs: list[torch.Tensor], lens: torch.Tensor, masks: Masks | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, out_lens = xs[-1], lens
        for layer in getattr(self, self.body_name):
            if isinstance(layer, MaskedConv1d):
                out, out_lens = layer(out, out_lens, masks)
            else:
                out = layer(out)
        for pane, (conv, bn) in zip(xs, self.res, strict=False):  # non-residual blocks have no panes
            out = out + bn(conv(pane, lens, masks)[0])
        return getattr(self, self.out_name)(out), out_lens


class JasperEncoder(nn.Module):
    """The stack of blocks; dense residual blocks see every earlier output since the last reset."""

    def __init__(
        self,
        in_feats: int,
        activation: str,
        blocks: list[dict],
        use_conv_masks: bool,
        init: str = "xavier_uniform",
        frame_splicing: int = 1,
        quartznet_names: bool = False,
    ) -> None:
        super().__init__()
        self.dense = [b["residual"] and b["residual_dense"] for b in blocks]
        layers = []
        channels = in_feats
        panes: list[int] = []
        for b in blocks:
            if b["residual"]:
                panes = panes + [channels] if b["residual_dense"] else [channels]
            else:
                panes = []
            layers.append(
                JasperBlock(
                    b.get("infilters") or channels,
                    b["filters"],
                    b["repeat"],
                    b["kernel_size"][0],
                    b["stride"][0],
                    b["dilation"][0],
                    b["dropout"],
                    activation,
                    pane_channels=panes if b["residual"] else [],
                    separable=b["separable"],
                    masked=use_conv_masks,
                    quartznet_names=quartznet_names,
                )
            )
            channels = b["filters"]
        self.layers = nn.ModuleList(layers)
        self.out_channels = channels

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs: list[torch.Tensor] = [x]
        masks: Masks = {}
        for layer, dense in zip(self.layers, self.dense, strict=True):
            out, lens = layer(xs, lens, masks)
            xs = xs + [out] if dense else [out]
        return xs[-1], lens


class JasperDecoderForCTC(nn.Module):
    """1x1 convolution to `n_classes` (labels + blank), then log-softmax over classes in float32:
    bf16 log-probs do not sum to one closely enough, and the CTC loss of a well-trained model then
    goes negative."""

    def __init__(self, in_feats: int, n_classes: int, init: str = "xavier_uniform") -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv1d(in_feats, n_classes, kernel_size=1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).transpose(1, 2).float().log_softmax(dim=2)


def init_weights(module: nn.Module, mode: str = "xavier_uniform") -> None:
    """The reference's init: conv weights by `mode`, BatchNorm to identity, conv biases default."""
    if isinstance(module, nn.Conv1d):
        if mode == "xavier_uniform":
            nn.init.xavier_uniform_(module.weight, gain=1.0)
        elif mode == "xavier_normal":
            nn.init.xavier_normal_(module.weight, gain=1.0)
        elif mode == "kaiming_uniform":
            nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
        elif mode == "kaiming_normal":
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        else:
            raise ValueError(f"unknown init {mode!r}")
    elif isinstance(module, nn.BatchNorm1d):
        module.reset_running_stats()
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Jasper(nn.Module):
    """features `[B, n_feats, T]`, lengths `[B]` -> log_probs `[B, T', n_classes]`, lengths `[B]` (int64)."""

    def __init__(self, encoder: dict, decoder: dict) -> None:
        super().__init__()
        self.encoder = JasperEncoder(**encoder)
        self.decoder = JasperDecoderForCTC(**decoder)
        self.encoder.apply(lambda m: init_weights(m, encoder["init"]))
        self.decoder.apply(lambda m: init_weights(m, decoder["init"]))
        self.masked = encoder["use_conv_masks"]

    @classmethod
    def from_config(cls, cfg: dict) -> Jasper:
        """Build from a whole loaded config (`labels` + `jasper`/`quartznet` section)."""
        sections = model_config(cfg)
        sections["encoder"]["quartznet_names"] = model_section_name(cfg) == "quartznet"
        return cls(**sections)

    @property
    def num_classes(self) -> int:
        return self.decoder.layers[0].out_channels

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded, lens = self.encoder(features, lengths)
        return self.decoder(encoded), lens
