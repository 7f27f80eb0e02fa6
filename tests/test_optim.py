"""Tests for jasper.training.optim: Novograd against the spec's worked example and the reference's golden
fixture, both LR policies against the reference's values, and the EMA's arithmetic."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import require_shared
from torch import nn

from jasper.training.optim import EMA, Novograd, build_optimizer, lr_at, set_lr


def _fixture() -> dict:
    return torch.load(require_shared("fixtures", "reference", "optim.pt"), weights_only=True)


def _schedule_kwargs(settings: dict, policy: str) -> dict:
    return dict(
        base_lr=settings["initial_lr"],
        min_lr=settings["min_lr"],
        steps_per_epoch=settings["steps_per_epoch"],
        warmup_epochs=settings["warmup_epochs"],
        hold_epochs=settings["hold_epochs"],
        num_epochs=settings["num_epochs"],
        policy=policy,
        exp_gamma=settings["exp_gamma"],
    )


def _step(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()


def test_novograd_worked_example() -> None:
    p = nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = Novograd([p], lr=0.1, weight_decay=0.0)
    grad = torch.tensor([3.0, 4.0])
    _step(opt, [p], [grad])
    state = opt.state[p]
    assert state["step"] == 1
    assert state["exp_avg_sq"].dtype == torch.float32 and state["exp_avg_sq"].dim() == 0
    torch.testing.assert_close(state["exp_avg_sq"], torch.tensor(25.0))
    torch.testing.assert_close(state["exp_avg"], torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(p.detach(), torch.tensor([0.94, 0.92]))
    _step(opt, [p], [grad])
    torch.testing.assert_close(state["exp_avg"], torch.tensor([1.17, 1.56]))
    torch.testing.assert_close(p.detach(), torch.tensor([0.823, 0.764]))


def test_novograd_matches_reference_fixture() -> None:
    fx = _fixture()
    hyper = fx["hyper"]
    params = [nn.Parameter(t.clone()) for t in fx["init"]]
    opt = Novograd(
        params,
        lr=hyper["lr"],
        betas=tuple(hyper["betas"]),
        eps=hyper["eps"],
        weight_decay=hyper["weight_decay"],
    )
    for grads in fx["grads"]:
        _step(opt, params, grads)
    for p, expected in zip(params, fx["after"], strict=True):
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)


def test_novograd_leaves_grad_untouched() -> None:
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = Novograd([p], lr=0.1, weight_decay=0.01)
    p.grad = torch.tensor([3.0, 4.0, 12.0])
    opt.step()
    torch.testing.assert_close(p.grad, torch.tensor([3.0, 4.0, 12.0]), rtol=0, atol=0)


def test_novograd_beta2_and_amsgrad_state() -> None:
    p = nn.Parameter(torch.zeros(2))
    opt = Novograd([p], lr=0.1, betas=(0.9, 0.5), amsgrad=True)
    _step(opt, [p], [torch.tensor([3.0, 4.0])])  # v starts at 0, so v = n = 25
    _step(opt, [p], [torch.tensor([0.0, 1.0])])  # v = 0.5*25 + 0.5*1 = 13, max stays 25
    state = opt.state[p]
    torch.testing.assert_close(state["exp_avg_sq"], torch.tensor(13.0))
    torch.testing.assert_close(state["max_exp_avg_sq"], torch.tensor(25.0))
    # m = 0.9*[0.6, 0.8] + [0, 1]/(5 + eps)
    torch.testing.assert_close(state["exp_avg"], torch.tensor([0.54, 0.92]))


def test_novograd_rejects_sparse_grads() -> None:
    emb = nn.Embedding(4, 2, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        Novograd(emb.parameters()).step()


def test_novograd_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    init = [torch.randn(4, 3), torch.randn(5)]
    grads = [[torch.randn_like(t) for t in init] for _ in range(4)]

    def make() -> tuple[list[nn.Parameter], Novograd]:
        params = [nn.Parameter(t.clone()) for t in init]
        return params, Novograd(params, lr=0.01, weight_decay=1e-3)

    straight, opt = make()
    for g in grads:
        _step(opt, straight, g)

    first, opt = make()
    for g in grads[:2]:
        _step(opt, first, g)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    reference_group_keys = {"params", "lr", "betas", "eps", "weight_decay", "grad_averaging", "amsgrad"}
    assert set(saved["optim"]["param_groups"][0]) == reference_group_keys
    assert set(saved["optim"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}

    resumed, opt = make()
    for p, t in zip(resumed, saved["params"], strict=True):
        p.data.copy_(t)
    opt.load_state_dict(saved["optim"])
    for g in grads[2:]:
        _step(opt, resumed, g)
    for a, b in zip(straight, resumed, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_build_optimizer() -> None:
    params = [nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer("novograd", params, 0.01, 1e-3), Novograd)
    adamw = build_optimizer("adamw", params, 0.01, 1e-3)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.999)
    sgd = build_optimizer("sgd", params, 0.01, 0.0)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="novograd, adamw, sgd"):
        build_optimizer("lamb", params, 0.01, 0.0)


@pytest.mark.parametrize("policy", ["exponential", "legacy"])
def test_lr_policy_matches_reference_fixture(policy: str) -> None:
    settings = _fixture()["lr_policy"]
    spe = settings["steps_per_epoch"]
    expected = settings["values"][policy]
    assert len(expected) == 60
    kwargs = _schedule_kwargs(settings, policy)
    for step, lr in enumerate(expected):
        assert lr_at(step, step // spe + 1, **kwargs) == pytest.approx(lr, rel=0, abs=1e-12), step


SCHEDULE = dict(
    base_lr=0.01,
    min_lr=1e-4,
    steps_per_epoch=10,
    warmup_epochs=2,
    hold_epochs=1,
    num_epochs=8,
    exp_gamma=0.3,
)


@pytest.mark.parametrize("policy", ["exponential", "legacy"])
def test_lr_min_floor_and_monotone_warmup(policy: str) -> None:
    lrs = [lr_at(s, s // 10 + 1, policy=policy, **SCHEDULE) for s in range(80)]
    assert all(lr >= SCHEDULE["min_lr"] for lr in lrs)
    warmup = lrs[:21]
    assert (
        all(a < b for a, b in zip(warmup[:-1], warmup[1:], strict=True)) and warmup[-1] == SCHEDULE["base_lr"]
    )
    assert lrs[-1] == SCHEDULE["min_lr"]  # both decays end below the floor
    floor_everywhere = {**SCHEDULE, "min_lr": 1.0}
    assert lr_at(0, 1, policy=policy, **floor_everywhere) == 1.0  # the floor applies in warmup too


def test_lr_unknown_policy_and_set_lr() -> None:
    with pytest.raises(ValueError, match="exponential, legacy"):
        lr_at(0, 1, policy="cosine", **SCHEDULE)
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = Novograd([{"params": [a]}, {"params": [b], "lr": 0.5}])
    set_lr(opt, 0.02)
    assert [g["lr"] for g in opt.param_groups] == [0.02, 0.02]


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_ema_averages_floats_and_copies_int_buffers() -> None:
    torch.manual_seed(0)
    model = _tiny_model()
    ema = EMA(model, decay=0.9)
    assert not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())
    before = {k: v.clone() for k, v in ema.state_dict().items()}

    model.train()
    model(torch.randn(8, 3))  # moves BN running stats and bumps num_batches_tracked
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)

    current = model.state_dict()
    for key, value in ema.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * before[key] + 0.1 * current[key])
        else:
            assert torch.equal(value, current[key]), key
    assert ema.state_dict()["1.num_batches_tracked"].item() == 1


def test_ema_decay_zero_tracks_the_model_and_unwraps_ddp_like_wrappers() -> None:
    torch.manual_seed(0)
    model = _tiny_model()
    ema = EMA(nn.DataParallel(model), decay=0.0)
    assert set(ema.state_dict()) == set(model.state_dict())  # no "module." prefix
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-3.0)
    model.train()
    model(torch.randn(8, 3))
    ema.update(nn.DataParallel(model))
    for key, value in model.state_dict().items():
        assert torch.equal(ema.state_dict()[key], value), key

    restored = EMA(_tiny_model(), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(restored.module.state_dict()[key], value), key
