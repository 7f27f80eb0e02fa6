"""What a training checkpoint records beyond the weights, and how a resumed job gets it back.

A job can stop at any update (a signal, the time budget, --stop_after_steps) and the next one must
go on as if it had not: the position in the epoch (updates done, with the global batch they had),
the counters, the training clock of all jobs, and every rank's RNG states (each rank draws its own
dither, masks and dropout). Reference checkpoints, which have none of this, resume at the end of
their epoch.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from jasper import checkpoint
from jasper.training.optim import EMA

log = logging.getLogger(__name__)

NO_BEST = math.inf  # best_wer before any evaluation (the reference used 10**6)


@dataclass
class Progress:
    """Where training stands: what a checkpoint records so that a resumed job continues exactly here."""

    epoch: int = 1  # 1-based epoch in progress
    steps_done: int = 0  # optimizer steps done in `epoch`
    updates: int = 0  # optimizer steps done in all (skipped ones included)
    best_wer: float = NO_BEST
    skipped_steps: int = 0
    skipped_files: int = 0  # over all ranks, up to the last log/checkpoint
    train_seconds: float = 0.0  # training time of all jobs so far: the time budget spans resumes


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random alike."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def checkpoint_state(
    raw_model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    steps_per_epoch: int,
    global_batch: int,
) -> dict[str, Any]:
    """The reference's checkpoint keys plus the exact position (`sampler`) and counters."""
    epoch, steps = progress.epoch, progress.steps_done
    if steps >= steps_per_epoch:
        epoch, steps = epoch + 1, 0
    return {
        "epoch": epoch - 1,  # completed epochs, as the reference
        "step": progress.updates + 1,  # 1-based index of the next update, as the reference
        "best_wer": progress.best_wer,
        "state_dict": raw_model.state_dict(),
        "ema_state_dict": ema.state_dict() if ema else None,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        # Position: global batches (updates) done in `epoch`, each of `global_batch` utterances.
        "sampler": {
            "epoch": epoch,
            "batches_done": steps,
            "global_batch": global_batch,
            "steps_per_epoch": steps_per_epoch,
        },
        "skipped_steps": progress.skipped_steps,
        "skipped_files": progress.skipped_files,
        "train_seconds": progress.train_seconds,
    }


def find_resume_checkpoint(output_dir: str, rank: int) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable epoch checkpoint, chosen by rank 0 so that every rank loads the same file."""
    found = checkpoint.latest_loadable(output_dir) if rank == 0 else None
    choice = [str(found[0]) if found else None]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(choice, src=0)
    if choice[0] is None:
        log.info("--resume: no checkpoint in %s, starting from scratch", output_dir)
        return None
    if found is None:
        found = Path(choice[0]), checkpoint.read(choice[0])
    return found


def restore_progress(ckpt: dict[str, Any], steps_per_epoch: int, global_batch: int) -> Progress:
    """The position after `ckpt`; a reference checkpoint (no `sampler`) is at the end of its epoch."""
    progress = Progress(
        best_wer=float(ckpt.get("best_wer", NO_BEST)),
        skipped_steps=int(ckpt.get("skipped_steps", 0)),
        skipped_files=int(ckpt.get("skipped_files", 0)),
        train_seconds=float(ckpt.get("train_seconds", 0.0)),
    )
    position = ckpt.get("sampler")
    if not position:
        progress.epoch = int(ckpt.get("epoch", 0)) + 1
        progress.updates = (progress.epoch - 1) * steps_per_epoch
        return progress
    batches = int(position["batches_done"])
    if batches and position.get("global_batch") != global_batch:
        # Another world size or batch size: continue after about as many utterances.
        new = batches * int(position.get("global_batch") or global_batch) // global_batch
        log.warning(
            "the checkpoint's batches held %s utterances, now %d: continuing its epoch after %d batches "
            "instead of %d (the batch order differs from the original run's)",
            position.get("global_batch"),
            global_batch,
            new,
            batches,
        )
        batches = new
    progress.epoch = int(position["epoch"])
    progress.steps_done = batches
    progress.updates = int(ckpt["step"]) - 1
    if progress.steps_done >= steps_per_epoch:
        progress.epoch, progress.steps_done = progress.epoch + 1, 0
    return progress


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else None,
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def gather_rng(world: int) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (each rank draws its own dither, masks and dropout)."""
    if world == 1:
        return [rng_state()]
    states: list[Any] = [None] * world
    dist.all_gather_object(states, rng_state())
    return states


def restore_rng(states: list[dict[str, Any]] | None, world: int, rank: int, fallback_seed: int) -> None:
    if not states or len(states) != world:
        if states:
            log.warning("the checkpoint has RNG states of %d ranks, not %d: reseeding", len(states), world)
        seed_everything(fallback_seed)
        return
    state = states[rank]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])
