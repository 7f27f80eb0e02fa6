"""Greedy CTC decoding: argmax per frame, collapse repeats, drop blanks, within each output length.

The reference decodes padded frames too (spec 12.3); here every function takes the lengths the
model returned and never looks past them.

The second decoding, CTC prefix beam search with an n-gram word LM, is `jasper.lm.beam`.
"""

from __future__ import annotations

import torch

from jasper.text import Tokenizer


def greedy_ids(
    log_probs: torch.Tensor, lengths: torch.Tensor | None = None, blank: int | None = None
) -> torch.Tensor:
    """Argmax ids `[B, T]` (int32); frames at or beyond each length are set to `blank`."""
    ids = log_probs.argmax(dim=-1).to(torch.int32)
    if lengths is not None:
        blank = log_probs.shape[-1] - 1 if blank is None else blank
        beyond = torch.arange(ids.shape[1], device=ids.device)[None, :] >= lengths.to(ids.device)[:, None]
        ids = ids.masked_fill(beyond, blank)
    return ids


def collapse(ids: list[int], blank: int) -> list[int]:
    """CTC collapse: emit a label when it is not blank and differs from the previous frame's."""
    out, prev = [], blank
    for p in ids:
        if p != blank and p != prev:
            out.append(p)
        prev = p
    return out


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, tokenizer: Tokenizer) -> list[str]:
    """Transcripts for a batch: argmax, collapse and map to characters, frames within `lengths` only."""
    ids = greedy_ids(log_probs, lengths, tokenizer.blank).cpu()
    out = []
    for row, n in zip(ids.tolist(), lengths.tolist(), strict=True):
        out.append(tokenizer.decode(collapse(row[: int(n)], tokenizer.blank)))
    return out


def decode_ids(ids: torch.Tensor, lengths: torch.Tensor, tokenizer: Tokenizer) -> list[str]:
    """CTC-collapse argmax ids `[B, T]` within each length and map them to text (on the host)."""
    rows, lens = ids.cpu().tolist(), lengths.cpu().tolist()
    return [
        tokenizer.decode(collapse(row[: int(n)], tokenizer.blank)) for row, n in zip(rows, lens, strict=True)
    ]


def frame_alignment(ids: list[int], blank: int) -> list[tuple[int, int]]:
    """(label id, first frame) for each emitted label: the basis of word timestamps."""
    out, prev = [], blank
    for t, p in enumerate(ids):
        if p != blank and p != prev:
            out.append((p, t))
        prev = p
    return out


# --- Beam search with an n-gram word LM ------------------------------------------------------------
#
# A character model trained briefly spells phonetically ("helo wrld"); CTC prefix beam search keeps
# the best few prefixes per frame and scores each completed word with a KenLM word n-gram
# (shallow fusion: acoustic log-prob + alpha * LM log-prob + beta per word), which turns such output
# into words. The search itself is pyctcdecode's, a widely used and tested implementation (prefix
# merging, partial-word penalties through a trie of the LM's unigrams, hotwords), not a hand-written
# one. pyctcdecode is pure Python, so utterances are decoded in parallel by a pool of forked workers,
# which share the parent's loaded LM (copy-on-write) instead of loading their own.
