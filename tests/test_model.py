"""Jasper model: reference log-probs, state_dict layout and counts, masking, lengths."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import require_shared

from jasper import config
from jasper.model import Jasper, MaskedConv1d, Masks, conv_output_lengths, frame_mask, is_channels_last
from jasper.model_info import describe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _model(name: str) -> Jasper:
    return Jasper.from_config(config.load(CONFIGS / f"{name}.yaml"))


def test_reference_log_probs_fixture() -> None:
    fx = torch.load(require_shared("fixtures", "reference", "model.pt"), weights_only=True)
    config.validate(fx["config"])
    model = Jasper.from_config(fx["config"]).eval()
    model.load_state_dict(fx["state_dict"], strict=True)
    with torch.no_grad():
        log_probs, lens = model(fx["features"], fx["feature_lens"])
    assert torch.equal(lens, fx["out_lens"]) and lens.dtype == torch.int64
    assert log_probs.shape == fx["log_probs"].shape
    assert (log_probs - fx["log_probs"]).abs().max() < 1e-4


def _check_layout(model: Jasper, shapes_file: str, keys: int, params: int) -> None:
    ref = json.loads(require_shared("fixtures", "reference", shapes_file).read_text())
    sd = model.state_dict()
    assert len(sd) == len(ref) == keys
    assert list(sd) == list(ref)
    assert {k: list(v.shape) for k, v in sd.items()} == ref
    assert sum(p.numel() for p in model.parameters()) == params


def test_jasper10x5dr_layout() -> None:
    model = _model("jasper10x5dr_speedp-online_speca")
    _check_layout(model, "jasper10x5dr_state_dict_shapes.json", 650, 332_632_349)
    info = describe(model)
    assert info.receptive_field_frames == 1763 and info.frame_rate_out == 50


def test_quartznet15x5_layout() -> None:
    _check_layout(
        _model("quartznet15x5_speedp-online-1.15_speca"),
        "quartznet15x5_state_dict_shapes.json",
        637,
        18_924_381,
    )


def test_output_lengths_rule() -> None:
    model = _model("tiny").eval()
    feats = torch.randn(2, 64, 112)
    with torch.no_grad():
        log_probs, lens = model(feats, torch.tensor([100, 77], dtype=torch.int32))
    assert log_probs.shape == (2, 56, 29) and lens.tolist() == [50, 39]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 56), atol=1e-5)
    assert conv_output_lengths(torch.tensor([100, 101]), 11, 2, 1, 5).tolist() == [50, 51]


def test_masking_makes_padding_irrelevant() -> None:
    torch.manual_seed(0)
    model = _model("tiny").eval()
    short = torch.randn(1, 64, 48)
    padded = torch.cat([short, torch.randn(1, 64, 64) * 5], dim=2)
    with torch.no_grad():
        alone, n_alone = model(short, torch.tensor([48]))
        batch, n_batch = model(padded, torch.tensor([48]))
    n = int(n_alone[0])
    assert int(n_batch[0]) == n
    assert (alone[0, :n] - batch[0, :n]).abs().max() < 1e-5


def test_separable_blocks_run_channels_last_on_cpu_as_plain_convolutions(monkeypatch) -> None:
    """On a CPU QuartzNet's depthwise convolutions (2-D ones) hand channels-last activations to the
    1x1 ones (matrix products over channels); the log-probs and gradients are those of the plain 1-D
    convolutions that exported graphs and GPUs run."""
    torch.manual_seed(0)
    model = _model("quartznet5x3_cpu").eval()
    feats, lens = torch.randn(2, 64, 160), torch.tensor([160, 97])
    weights = torch.randn(2, 80, 29)
    layouts: list[bool] = []
    pointwise = model.encoder.layers[2].mconv[1]  # after a depthwise one, before a BatchNorm
    pointwise.register_forward_hook(lambda m, i, out: layouts.append(is_channels_last(out[0])))
    params = [model.encoder.layers[2].mconv[0].weight, model.encoder.layers[2].mconv[1].weight]

    def run() -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        log_probs, out_lens = model(feats, lens)
        return log_probs, out_lens, torch.autograd.grad((log_probs * weights).sum(), params)

    fast, fast_lens, fast_grads = run()
    monkeypatch.setattr("jasper.model._exporting", lambda: True)  # the plain 1-D convolutions
    plain, plain_lens, plain_grads = run()
    assert layouts == [True, False]
    assert torch.equal(fast_lens, plain_lens) and fast_lens.tolist() == [80, 49]
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    for got, expected in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_forward_builds_each_mask_once_and_only_for_its_own_lengths() -> None:
    masks: Masks = {}
    x, lens = torch.randn(2, 4, 10), torch.tensor([10, 6])
    first = frame_mask(lens, x, masks)
    assert first.tolist() == [[[1.0] * 10], [[1.0] * 6 + [0.0] * 4]] and first.dtype == x.dtype
    assert frame_mask(lens, torch.randn(2, 8, 10), masks) is first  # same lengths, same frames
    other = torch.tensor([10, 3])  # new lengths: a new mask, never a stale one
    assert frame_mask(other, x, masks)[1, 0].tolist() == [1.0] * 3 + [0.0] * 7
    assert frame_mask(lens, x[..., :8], masks).shape == (2, 1, 8)
    assert frame_mask(lens, x.double(), masks).dtype == torch.float64
    assert frame_mask(lens, x) is not first  # without a memo, always built


def test_unmasked_variant_returns_lengths_too() -> None:
    cfg = config.load(CONFIGS / "tiny.yaml", ["jasper.encoder.use_conv_masks=False"])
    model = Jasper.from_config(cfg).eval()
    with torch.no_grad():
        log_probs, lens = model(torch.randn(2, 64, 64), torch.tensor([64, 40]))
    assert log_probs.shape[:2] == (2, 32) and lens.tolist() == [32, 20]


def test_init_is_reference_like() -> None:
    model = _model("tiny")
    bn = model.encoder.layers[0].conv[1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and bn.eps == 1e-3
    conv = model.encoder.layers[0].conv[0]
    bound = (6 / (conv.in_channels * 11 + conv.out_channels * 11)) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.bias is None


def test_depthwise_convolution_on_cpu_equals_the_plain_one_forward_and_backward() -> None:
    """QuartzNet's depthwise convolutions run as channels-last 2-D ones on a CPU (faster); the
    outputs, lengths and gradients are those of the plain 1-D convolution."""
    torch.manual_seed(0)
    conv = MaskedConv1d(48, 48, 33, stride=2, padding=16, groups=48, bias=False)
    assert conv.depthwise
    x = torch.randn(3, 48, 90, requires_grad=True)
    lens = torch.tensor([90, 61, 7])
    out, out_lens = conv(x, lens)
    plain = torch.nn.functional.conv1d(
        x * (torch.arange(90)[None, None, :] < lens[:, None, None]), conv.weight, None, 2, 16, 1, 48
    )
    assert torch.equal(out_lens, conv_output_lengths(lens, 33, 2, 1, 16))
    assert torch.allclose(out, plain, atol=1e-6)
    (grad,) = torch.autograd.grad(out.square().sum(), conv.weight)
    (plain_grad,) = torch.autograd.grad(plain.square().sum(), conv.weight)
    assert torch.allclose(grad, plain_grad, rtol=1e-5, atol=1e-4)
