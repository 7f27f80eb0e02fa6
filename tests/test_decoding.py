"""Greedy CTC decoding and corpus WER/CER against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from jasper.decoding import collapse, frame_alignment, greedy_decode, greedy_ids
from jasper.metrics import cer, char_errors, wer, word_errors
from jasper.text import Tokenizer

LABELS = [" ", *"abcdefghijklmnopqrstuvwxyz", "'"]
BLANK = 28


def _log_probs(ids: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(ids), len(ids[0]), 29), -10.0)
    for b, row in enumerate(ids):
        for t, i in enumerate(row):
            out[b, t, i] = 0.0
    return out.log_softmax(-1)


def test_collapse_reference_example() -> None:
    # the spec's example: [28,8,8,28,8,5,5,0,0,28] -> "hhe "
    ids = collapse([28, 8, 8, 28, 8, 5, 5, 0, 0, 28], BLANK)
    assert ids == [8, 8, 5, 0]
    assert Tokenizer(LABELS).decode(ids) == "hhe "


def test_collapse_edge_cases() -> None:
    assert collapse([], BLANK) == []
    assert collapse([BLANK] * 5, BLANK) == []
    assert collapse([1, 1, 1], BLANK) == [1]
    assert collapse([1, BLANK, 1], BLANK) == [1, 1]


def test_greedy_respects_lengths() -> None:
    tok = Tokenizer(LABELS)
    # utterance 2's padding frames would decode to "zz" if they were read
    log_probs = _log_probs([[8, 9, BLANK, 9, 0, 1], [8, 9, BLANK, 26, BLANK, 26]])
    lens = torch.tensor([6, 3])
    assert greedy_decode(log_probs, lens, tok) == ["hii a", "hi"]
    ids = greedy_ids(log_probs, lens)
    assert ids.dtype == torch.int32 and ids[1, 3:].eq(BLANK).all()


def test_frame_alignment() -> None:
    assert frame_alignment([BLANK, 8, 8, BLANK, 9, 9, 0], BLANK) == [(8, 1), (9, 4), (0, 6)]


def test_wer_hand_computed() -> None:
    # 1 substitution + 1 deletion over 4 + 2 reference words
    assert wer(["the cat sat", "hello"], ["the cat sat down", "hello world"]) == pytest.approx(2 / 6)
    e = word_errors(["a x c d"], ["a b c"])
    assert (e.substitutions, e.insertions, e.deletions, e.errors, e.units) == (1, 1, 0, 2, 3)
    assert wer(["same words"], ["same words"]) == 0.0


def test_wer_is_corpus_level_not_mean() -> None:
    # per-utterance rates 1.0 and 0.0 would average to 0.5; the corpus rate is 1/5
    assert wer(["x", "b c d e"], ["a", "b c d e"]) == pytest.approx(1 / 5)


def test_empty_reference_and_mismatch() -> None:
    assert word_errors(["extra words"], [""]).insertions == 2
    assert wer([""], [""]) == float("inf")
    with pytest.raises(ValueError):
        wer(["a"], ["a", "b"])


def test_cer() -> None:
    assert cer(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert char_errors(["hello world"], ["hello world"]).errors == 0
