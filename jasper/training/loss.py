"""The training objective: CTC loss as the reference computes it, and the allocator warm-up that
runs it at every padded length before the first step (--pre_allocate_range)."""

from __future__ import annotations

import logging

import torch
from torch import nn
from tqdm import tqdm

from jasper.device import autocast
from jasper.features import FilterbankFeatures

log = logging.getLogger(__name__)


def ctc_loss(
    log_probs: torch.Tensor,
    out_lens: torch.Tensor,
    targets: torch.Tensor,
    target_lens: torch.Tensor,
    blank: int,
) -> torch.Tensor:
    """Per-utterance CTC negative log-likelihood `[B]` (the reference averages it over the batch,
    without dividing by target length). Infinite values (input shorter than target) are kept so the
    caller can count and skip them."""
    return nn.functional.ctc_loss(
        log_probs.transpose(0, 1).float(),
        targets,
        out_lens.long(),
        target_lens.long(),
        blank=blank,
        reduction="none",
        zero_infinity=False,
    )


def pre_allocate(
    model: nn.Module,
    features: FilterbankFeatures,
    frame_range: list[int],
    batch: int,
    blank: int,
    amp_dtype: torch.dtype | None,
    show_progress: bool = False,
) -> None:
    """Forward+backward at every padded length in `frame_range` (allocator and cuDNN warm-up), then
    put the weights, BatchNorm statistics and RNG states back: training is the same with or without it.
    With cuDNN autotuning each length costs seconds on a GPU, hence the progress bar."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    device = next(model.parameters()).device
    lo, hi = frame_range
    lengths = range(lo, hi + features.pad_align, features.pad_align)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for frames in tqdm(lengths, desc="pre-allocating", unit="length", disable=not show_progress):
            feats = torch.randn(batch, features.n_filt, frames, device=device)
            lens = torch.full((batch,), frames, dtype=torch.int32, device=device)
            target_len = max(1, min(100, frames // 4))
            targets = torch.randint(0, blank, (batch, target_len), device=device)
            with autocast(device, amp_dtype):
                log_probs, out_lens = model(feats, lens)
                target_lens = torch.full((batch,), target_len, device=device)
                loss = ctc_loss(log_probs, out_lens, targets, target_lens, blank).mean()
            loss.backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    log.info("pre-allocated for %d..%d frames", lo, hi)
