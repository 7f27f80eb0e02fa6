"""Optimizers, learning-rate schedule and weight averaging for Jasper training.

Three pieces, each matching NVIDIA's reference training script where that matters for reproducing
its results, and deliberately departing from it where the reference has a known rough edge:

* `Novograd`: the layer-wise normalised-gradient optimizer the Jasper recipes are tuned for. Same
  update rule and state layout as the reference, so checkpoints carry over, but it leaves `p.grad`
  untouched instead of normalising it in place.
* `lr_at`: the `exponential` and `legacy` learning-rate policies as a pure function, so the trainer,
  resumption logic and tests can all ask "what is the LR for update s?" without an optimizer.
* `EMA`: an exponential moving average of the model weights, which (unlike the reference) copies
  integer buffers such as `num_batches_tracked` instead of averaging and truncating them.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["EMA", "OPTIMIZERS", "LR_POLICIES", "Novograd", "build_optimizer", "lr_at", "set_lr"]

OPTIMIZERS = ("novograd", "adamw", "sgd")
LR_POLICIES = ("exponential", "legacy")


class Novograd(torch.optim.Optimizer):
    """Novograd: SGD with momentum on gradients normalised by a per-tensor running norm.

    For each parameter tensor the squared gradient norm `n` is averaged into a scalar `v`
    (`v = n` whenever `v` is still exactly 0, otherwise `v = b2*v + (1-b2)*n`), the gradient is
    divided by `sqrt(v) + eps`, weight decay `wd*p` is added after that normalisation (so it goes
    through the momentum, unlike AdamW's), and the result feeds a momentum buffer `m = b1*m + g`
    that is applied as `p -= lr*m`. There is no bias correction. With the recipe default
    `b2 = 0`, `v` is just the current squared norm, so each layer's step size is set by `lr`
    rather than by the scale of its gradient.

    The state (`step` as an int, `exp_avg`, a 0-dim float32 `exp_avg_sq`, and `max_exp_avg_sq`
    with `amsgrad`) and the param-group keys mirror the reference so its optimizer state_dicts
    load here and vice versa. Unlike the reference, `p.grad` is not modified, so gradients can
    still be inspected (logged, checked for overflow) after the step.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.95, 0.0),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        grad_averaging: bool = False,
        amsgrad: bool = False,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Invalid betas {betas}: each must be in [0, 1)")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            grad_averaging=grad_averaging,
            amsgrad=amsgrad,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter that has a gradient; return the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Bucket by device so the per-tensor scalars can be stacked and updated in one go.
            buckets: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Novograd does not support sparse gradients")
                buckets[p.device].append(p)
            for params in buckets.values():
                self._update(params, group)
        return loss

    def _update(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        """Update parameters that share a device, using foreach kernels to keep launches few."""
        beta1, beta2 = group["betas"]
        amsgrad = group["amsgrad"]
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros((), dtype=torch.float32, device=p.device)
                if amsgrad:
                    state["max_exp_avg_sq"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["step"] += 1
        grads = [p.grad for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]

        # All per-tensor scalars as one vector: the "v == 0" branch becomes a `where`, with no
        # host sync per tensor.
        norm_sq = torch.stack(torch._foreach_norm(grads)).float().square()
        v = torch.stack(exp_avg_sqs)
        v = torch.where(v == 0, norm_sq, v * beta2 + norm_sq * (1.0 - beta2))
        torch._foreach_copy_(exp_avg_sqs, v.unbind(0))
        if amsgrad:
            max_sqs = [s["max_exp_avg_sq"] for s in states]
            v = torch.maximum(torch.stack(max_sqs), v)
            torch._foreach_copy_(max_sqs, v.unbind(0))
        denom = v.sqrt() + group["eps"]

        # exp_avg = beta1 * exp_avg + c * grad / denom (+ wd * p), updated in place: a temporary
        # copy of every gradient would be a model-sized allocation each step, and on a CPU its page
        # faults cost as much as the arithmetic. One host sync reads the per-tensor step sizes.
        c = 1.0 - beta1 if group["grad_averaging"] else 1.0
        torch._foreach_mul_(exp_avgs, beta1)
        for exp_avg, grad, step_size in zip(exp_avgs, grads, (c / denom).tolist(), strict=True):
            exp_avg.add_(grad, alpha=step_size)
        if group["weight_decay"] != 0:
            torch._foreach_add_(exp_avgs, params, alpha=c * group["weight_decay"])
        torch._foreach_add_(params, exp_avgs, alpha=-group["lr"])


def build_optimizer(
    name: str,
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    lr: float,
    weight_decay: float,
    **kw: Any,
) -> torch.optim.Optimizer:
    """Build an optimizer by its CLI name, with the reference's defaults unless `kw` overrides them.

    `adamw` is torch's AdamW, not the reference's hand-written variant: that one scales weight
    decay by the bias-corrected step size and leaves `v` uncorrected inside the square root, so
    runs are close but not bit-identical. `sgd` (momentum 0.9) is offered as a simple baseline.
    """
    if name == "novograd":
        return Novograd(params, lr=lr, weight_decay=weight_decay, **kw)
    if name == "adamw":
        kw = {"betas": (0.9, 0.999), "eps": 1e-8, **kw}
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kw)
    if name == "sgd":
        kw = {"momentum": 0.9, **kw}
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, **kw)
    raise ValueError(f"Unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")


def lr_at(
    step: int,
    epoch: int,
    *,
    base_lr: float,
    min_lr: float,
    steps_per_epoch: int,
    warmup_epochs: int,
    hold_epochs: int,
    num_epochs: int,
    policy: str,
    exp_gamma: float,
) -> float:
    """Learning rate for optimizer update number `step` (0-based) taken during 1-based `epoch`.

    Convention: `step` counts the updates already applied, so `lr_at(step=0, ...)` is the LR of
    the very first update and the trainer should call it *before* each update. This is exactly
    the argument the reference passes (it calls its policy with its 1-based update counter s
    right after update s, i.e. to set the LR of update s+1, which is 0-based update s); the
    golden table of reference LRs for steps 0..59 is indexed the same way. The difference is
    only that the reference never applied the schedule to its first update, which ran at
    `base_lr`; calling this before every update fixes that.

    Warmup rises linearly over `warmup_epochs` (never reaching zero, so no update is wasted),
    then the LR holds at `base_lr` for `hold_epochs`, then decays:

    * `exponential`: a per-epoch staircase `exp_gamma ** (epoch - warmup_epochs - hold_epochs)`.
      Because `epoch` is 1-based, the first decayed epoch already has factor `exp_gamma`.
    * `legacy`: polynomial (power 2) decay reaching 0 after `num_epochs` epochs.

    `min_lr` floors the result in every phase, warmup included.
    """
    if policy not in LR_POLICIES:
        raise ValueError(f"Unknown LR policy {policy!r}; valid choices: {', '.join(LR_POLICIES)}")
    warmup_steps = warmup_epochs * steps_per_epoch
    hold_steps = hold_epochs * steps_per_epoch
    if step < warmup_steps:
        a = (step + 1) / (warmup_steps + 1)
    elif step < warmup_steps + hold_steps:
        a = 1.0
    elif policy == "exponential":
        a = exp_gamma ** (epoch - warmup_epochs - hold_epochs)
    else:
        total_steps = num_epochs * steps_per_epoch
        a = ((total_steps - step) / (total_steps - warmup_steps - hold_steps)) ** 2
    return max(a * base_lr, min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set `lr` on every param group: the schedule is global, as in the reference."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a (Distributed)DataParallel wrapper, so state_dict keys match."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


class EMA:
    """Exponential moving average of a model's weights, evaluated alongside the trained model.

    `update(model)` after every optimizer step sets `ema = decay*ema + (1-decay)*model` for each
    floating-point state_dict entry: parameters and BatchNorm running statistics alike, as in the
    reference. Integer buffers (`num_batches_tracked`) are copied instead; the reference averaged
    them as floats and truncated the result, which is meaningless.

    The averaged copy lives in `.module`, in eval mode and without gradients so it never joins
    an optimizer or a backward pass.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(_unwrap(model)).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of `model` (wrapped in DDP or not) into the average."""
        source = _unwrap(model).state_dict()
        target = self.module.state_dict()
        if source.keys() != target.keys():
            raise ValueError("EMA.update: the model's state_dict keys differ from the averaged copy's")
        # Tied weights appear under several keys; average each storage only once.
        unique = {target[k].data_ptr(): k for k in target}.values()
        float_keys = [k for k in unique if target[k].is_floating_point()]
        other_keys = [k for k in unique if not target[k].is_floating_point()]
        if float_keys:
            torch._foreach_lerp_(
                [target[k] for k in float_keys], [source[k] for k in float_keys], 1.0 - self.decay
            )
        for k in other_keys:
            target[k].copy_(source[k])

    def state_dict(self) -> dict[str, Any]:
        """The averaged model's state_dict, in the same layout as the model's own."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> Any:
        """Load averaged weights, e.g. the `ema_state_dict` of a checkpoint being resumed."""
        return self.module.load_state_dict(state_dict, strict=strict)
