"""torchrun integration: one process per GPU (NCCL) or per CPU worker (gloo), set up from the environment.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous variables; a plain `python` run has
none of them and is a world of one. Nothing else in jasper reads those variables.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """This process's place in the job and the device it should use."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device: str | None = None) -> Context:
    """Join the torchrun job if there is one; pick `cuda:LOCAL_RANK` when CUDA exists, else CPU.

    `device` forces "cpu" or "cuda". The backend is NCCL on CUDA and gloo on CPU. A torchrun job of
    one process joins a process group too, so that one GPU runs the same DDP and NCCL code as eight.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    launched = world > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if launched and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Context(rank, world, local_rank, dev)


def initialized() -> bool:
    """True inside a process group (torchrun), even one of a single process."""
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_true(flag: bool, device: torch.device) -> bool:
    """True only if `flag` is true on every rank (so all ranks take the same branch)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _over_ranks(values: list[float], device: torch.device, op: Any) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over all ranks (itself when not distributed)."""
    return _over_ranks(values, device, dist.ReduceOp.SUM)


def broadcast_buffers(*modules: torch.nn.Module | None) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics), as the checkpoint has them.

    DDP broadcasts them at the start of each forward pass, so after the last training step every rank
    still holds the statistics of its own last batch; the EMA's are averaged per rank. Evaluating
    with those would make the sharded WER differ from rank 0's model.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for module in modules:
        if module is not None:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def max_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """The largest of each value over all ranks (itself when not distributed)."""
    return _over_ranks(values, device, dist.ReduceOp.MAX)


def range_over_ranks(name: str, value: float, device: torch.device) -> tuple[float, float]:
    """The smallest and the largest of `value` over all ranks, with an error logged when they differ:
    for counts that every rank must agree on (a step skipped on one rank only splits the weights)."""
    fewest = _over_ranks([value], device, dist.ReduceOp.MIN)[0]
    most = max_over_ranks([value], device)[0]
    if fewest != most:
        logging.getLogger("jasper").error("the ranks disagree on %s: %g to %g", name, fewest, most)
    return fewest, most


class _StderrHandler(logging.StreamHandler):
    """Writes to the current `sys.stderr` (pytest and notebooks replace it between runs)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(rank: int) -> None:
    """INFO messages from rank 0, warnings from every rank (prefixed with the rank)."""
    logger = logging.getLogger("jasper")
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    for handler in logger.handlers:
        if isinstance(handler, _StderrHandler):
            handler.setLevel(logger.level)  # a module logger set to DEBUG (a test, a caller) stays quiet here
            prefix = f"[rank {rank}] " if rank else ""
            handler.setFormatter(logging.Formatter(prefix + "%(levelname)s: %(message)s"))
