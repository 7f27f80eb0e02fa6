"""Corpus-level WER and CER: total edit distance over total reference words (characters).

Not the mean of per-utterance rates: a long utterance weighs more, as in the reference and in the
papers. Edit distances come from jiwer (rapidfuzz underneath) rather than a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import jiwer


@dataclass(frozen=True)
class ErrorRate:
    """Edit operations summed over a dataset; `rate` is errors / reference units."""

    errors: int
    units: int
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def rate(self) -> float:
        return self.errors / self.units if self.units else float("inf")

    def __add__(self, other: ErrorRate) -> ErrorRate:
        return ErrorRate(
            self.errors + other.errors,
            self.units + other.units,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )


def _check(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")


def word_errors(hypotheses: list[str], references: list[str]) -> ErrorRate:
    """Word edit operations (whitespace-split words) summed over all pairs."""
    _check(hypotheses, references)
    refs = [r.split() for r in references]
    hyps = [h.split() for h in hypotheses]
    total = ErrorRate(0, 0)
    # jiwer rejects empty references, so pairs with an empty reference count as pure insertions.
    keep = [i for i, r in enumerate(refs) if r]
    for i in set(range(len(refs))) - set(keep):
        total += ErrorRate(len(hyps[i]), 0, insertions=len(hyps[i]))
    if keep:
        out = jiwer.process_words([" ".join(refs[i]) for i in keep], [" ".join(hyps[i]) for i in keep])
        errors = out.substitutions + out.deletions + out.insertions
        units = sum(len(refs[i]) for i in keep)
        total += ErrorRate(errors, units, out.substitutions, out.deletions, out.insertions)
    return total


def char_errors(hypotheses: list[str], references: list[str]) -> ErrorRate:
    """Character edit operations (spaces count as characters) summed over all pairs."""
    _check(hypotheses, references)
    total = ErrorRate(0, 0)
    keep = [i for i, r in enumerate(references) if r]
    for i in set(range(len(references))) - set(keep):
        total += ErrorRate(len(hypotheses[i]), 0, insertions=len(hypotheses[i]))
    if keep:
        out = jiwer.process_characters([references[i] for i in keep], [hypotheses[i] for i in keep])
        errors = out.substitutions + out.deletions + out.insertions
        units = sum(len(references[i]) for i in keep)
        total += ErrorRate(errors, units, out.substitutions, out.deletions, out.insertions)
    return total


def wer(hypotheses: list[str], references: list[str]) -> float:
    """Corpus word error rate as a fraction (multiply by 100 for the reference's percent)."""
    return word_errors(hypotheses, references).rate


def cer(hypotheses: list[str], references: list[str]) -> float:
    """Corpus character error rate as a fraction."""
    return char_errors(hypotheses, references).rate
