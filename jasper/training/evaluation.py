"""Evaluate a model on a loader: CTC loss, greedy transcripts, corpus WER; exact across processes.

Used by training (dev WER every `eval_frequency` steps). In a distributed
run each rank evaluates its own shard (`ShardedEvalSampler`: every utterance exactly once) and
the edit counts are summed, so N processes give exactly the WER of one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from jasper.data import Batch
from jasper.decoding import greedy_decode
from jasper.metrics import ErrorRate, char_errors, word_errors
from jasper.text import Tokenizer
from jasper.training.loss import ctc_loss

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Totals over a dataset (summed over ranks) plus this rank's transcripts by utterance index."""

    loss: float
    words: ErrorRate
    chars: ErrorRate
    utterances: int
    seconds: float
    hypotheses: dict[int, str] = field(default_factory=dict)
    references: dict[int, str] = field(default_factory=dict)

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate


@torch.no_grad()
def evaluate(
    model: nn.Module,
    features: nn.Module,
    loader,
    tokenizer: Tokenizer,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Run the model over `loader` in eval mode; restore the previous train/eval mode afterwards."""
    was_training = model.training, features.training
    model.eval()
    features.eval()
    start = time.perf_counter()
    loss_sum, count, finite = 0.0, 0, 0
    words, chars = ErrorRate(0, 0), ErrorRate(0, 0)
    hyps: dict[int, str] = {}
    refs: dict[int, str] = {}
    batch: Batch
    for batch in loader:
        for failure in batch.failures:  # a dataset with skip_bad: the file is left out of the scores
            log.warning("skipping unreadable utterance: %s", failure.error)
        if len(batch) == 0:
            continue
        batch = batch.to(device, non_blocking=True)
        feats, feat_lens = features(batch.audio, batch.audio_lens)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            log_probs, out_lens = model(feats, feat_lens)
        losses = ctc_loss(log_probs, out_lens, batch.targets, batch.target_lens, tokenizer.blank)
        ok = torch.isfinite(losses)
        loss_sum += float(losses[ok].sum())
        finite += int(ok.sum())
        texts = greedy_decode(log_probs.float(), out_lens, tokenizer)
        targets = batch.targets.cpu().tolist()
        ref_texts = [
            tokenizer.decode(t[:n]) for t, n in zip(targets, batch.target_lens.tolist(), strict=True)
        ]
        words += word_errors(texts, ref_texts)
        chars += char_errors(texts, ref_texts)
        for idx, h, r in zip(batch.indices.tolist(), texts, ref_texts, strict=True):
            hyps[idx], refs[idx] = h, r
        count += len(texts)
    totals = [
        loss_sum,
        finite,
        count,
        words.errors,
        words.units,
        chars.errors,
        chars.units,
        words.substitutions,
        words.deletions,
        words.insertions,
    ]
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor(totals, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        totals = t.tolist()
    loss_sum, finite, count, we, wu, ce, cu, ws, wd, wi = totals
    if was_training[0]:
        model.train()
    if was_training[1]:
        features.train()
    return EvalResult(
        loss=loss_sum / finite if finite else float("inf"),
        words=ErrorRate(int(we), int(wu), int(ws), int(wd), int(wi)),
        chars=ErrorRate(int(ce), int(cu)),
        utterances=int(count),
        seconds=time.perf_counter() - start,
        hypotheses=hyps,
        references=refs,
    )
