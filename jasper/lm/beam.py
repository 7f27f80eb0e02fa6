"""CTC prefix beam search with an n-gram word LM: the Jasper paper's "beam search with a word LM".

The second decoding, beside `jasper.decoding`'s greedy one. The LM is a directory written by
`jasper lm build` (`jasper.lm.ngram` reads its layout) or a bare KenLM file.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jasper.lm.ngram import resolve_lm

DEFAULT_BEAM_WIDTH = 64
DEFAULT_ALPHA = 0.5  # pyctcdecode's defaults, used when neither the caller nor `jasper lm tune` set them
DEFAULT_BETA = 1.5
DEFAULT_HOTWORD_WEIGHT = 10.0  # pyctcdecode's


def parse_hotwords(
    items: Sequence[str], labels: Sequence[str], default: float = DEFAULT_HOTWORD_WEIGHT
) -> dict[str, float]:
    """`word[:weight]` items (the CLI's `--hotwords` and the lines of `--hotwords_file`) as
    {word: weight}; a word with a character outside the labels is a ValueError naming it."""
    out: dict[str, float] = {}
    allowed = set(labels)
    for item in items:
        word, _, weight = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        word = word.strip()
        if not word:
            continue
        outside = sorted(set(word) - allowed)
        if outside:
            raise ValueError(
                f"hotword {word!r} has characters outside the model's labels: {''.join(outside)!r}"
            )
        try:
            out[word] = float(weight) if weight else default
        except ValueError:
            raise ValueError(f"hotword {item!r}: the weight after ':' must be a number") from None
    return out


def weighted_scorer(weights: dict[str, float]) -> Any:
    """A pyctcdecode hotword scorer whose words each have their own weight: a whole word scores its
    weight, a partial word the share of the shortest hotword it starts that it has spelled so far."""
    from pyctcdecode.language_model import HotwordScorer

    weights = {unigram: w for phrase, w in weights.items() for unigram in phrase.split()}  # as pyctcdecode

    class WeightedHotwordScorer(HotwordScorer):
        def score(self, text: str) -> float:
            return sum(weights[m] for m in self._match_ptn.findall(text))

        def score_partial_token(self, token: str) -> float:
            if token not in self:
                return 0.0
            word = min((w for w in weights if w.startswith(token)), key=len)
            return weights[word] * len(token) / len(word)

    base = HotwordScorer.build_scorer(list(weights))
    return WeightedHotwordScorer(base._match_ptn, base._char_trie)  # noqa: SLF001


class BeamSearchDecoder:
    """CTC prefix beam search over per-utterance log-probs, with an optional KenLM word LM.

    `labels` are the model's output characters; the blank is the last class, `len(labels)`, as in
    `Tokenizer`. `lm` is a directory written by `jasper lm build` (its binary, unigrams and, when
    `jasper lm tune` has run, its tuned alpha/beta) or a KenLM `.arpa`/`.arpa.gz`/`.binary` file;
    None decodes without an LM. `alpha` weighs the LM log-prob, `beta` is added per word; left at
    None they come from the directory's tuning, else from `DEFAULT_ALPHA`/`DEFAULT_BETA`.
    `hotwords` get an extra `hotword_weight` bonus (they need not be in the LM); a mapping of word
    to weight gives each its own (`parse_hotwords` reads "word[:weight]"). Frames whose
    log-prob is below `token_min_logp` are not expanded (except the frame's best), and beams more
    than `-beam_prune_logp` below the best are dropped. `workers` > 1 decodes batches in that many
    forked processes. Outputs have single spaces and no leading or trailing space.

    Use as a context manager, or call `close()`, to stop the worker pool and free the LM.
    """

    def __init__(
        self,
        labels: Sequence[str],
        lm: str | Path | None = None,
        *,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        alpha: float | None = None,
        beta: float | None = None,
        unk_score_offset: float = -10.0,
        hotwords: Sequence[str] | dict[str, float] = (),
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        beam_prune_logp: float = -10.0,
        token_min_logp: float = -5.0,
        workers: int = 1,
    ) -> None:
        try:
            import pyctcdecode
        except ImportError as e:
            raise ImportError(
                "beam search needs pyctcdecode and kenlm: run `bash scripts/setup_kenlm.sh`"
            ) from e
        if beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {beam_width}")
        self.labels: tuple[str, ...] = tuple(labels)
        self.num_classes = len(self.labels) + 1
        self.beam_width = beam_width
        weights = hotwords if isinstance(hotwords, dict) else dict.fromkeys(hotwords, hotword_weight)
        self.hotwords = list(weights)
        self.hotword_weight = hotword_weight
        self._scorer = None  # per-word weights: a scorer of our own (pyctcdecode takes one weight)
        if len(set(weights.values())) > 1:
            self._scorer = weighted_scorer(weights)
        elif weights:
            self.hotword_weight = next(iter(weights.values()))
        self.beam_prune_logp = beam_prune_logp
        self.token_min_logp = token_min_logp
        self.workers = max(1, workers)
        self._pool: multiprocessing.pool.Pool | None = None

        model_path, unigrams, tuned = None, None, {}
        if lm is not None:
            model_path, unigrams, tuned = resolve_lm(lm)
        self.alpha = float(alpha if alpha is not None else tuned.get("alpha", DEFAULT_ALPHA))
        self.beta = float(beta if beta is not None else tuned.get("beta", DEFAULT_BETA))
        # pyctcdecode's alphabet takes the blank as "" and may rename some labels ("|", "_"):
        # insist that it keeps ours, or ids would map to the wrong characters.
        vocab = [*self.labels, ""]
        if pyctcdecode.Alphabet.build_alphabet(vocab).labels != vocab:
            raise ValueError(f"pyctcdecode cannot use the labels {self.labels} as they are")
        self._decoder = pyctcdecode.build_ctcdecoder(
            vocab,
            kenlm_model_path=None if model_path is None else str(model_path),
            unigrams=unigrams,
            alpha=self.alpha,
            beta=self.beta,
            unk_score_offset=unk_score_offset,
        )
        self.has_lm = model_path is not None

    def decode(self, log_probs: np.ndarray) -> str:
        """Transcript of one utterance from its log-probs `[T, num_classes]`."""
        array = self._check(log_probs)
        if not len(array):
            return ""
        if self._scorer is not None:
            return self._decode_weighted(array)
        return self._decoder.decode(array, **self._search_args())

    def _decode_weighted(self, array: np.ndarray) -> str:
        """pyctcdecode's own search (its `decode_beams` less the scorer it builds), with our scorer."""
        from pyctcdecode.constants import MIN_TOKEN_CLIP_P

        logp = np.clip(array, np.log(MIN_TOKEN_CLIP_P), 0)
        beams = self._decoder._decode_logits(  # noqa: SLF001  (pyctcdecode 0.5.0, its last release)
            logp,
            beam_width=self.beam_width,
            beam_prune_logp=self.beam_prune_logp,
            token_min_logp=self.token_min_logp,
            prune_history=False,
            hotword_scorer=self._scorer,
        )
        return beams[0][0]

    def decode_batch(self, log_probs: Sequence[np.ndarray]) -> list[str]:
        """Transcripts of utterances given as log-prob arrays `[T_i, num_classes]`, each trimmed to its
        own length (the format of `jasper infer --save_logits`); in parallel when `workers` > 1."""
        arrays = [self._check(a) for a in log_probs]
        if self._scorer is not None:
            return [self.decode(a) for a in arrays]
        todo = [i for i, a in enumerate(arrays) if len(a)]  # pyctcdecode cannot take zero frames
        pool = self._get_pool() if len(todo) > 1 else None
        texts = self._decoder.decode_batch(pool, [arrays[i] for i in todo], **self._search_args())
        out = [""] * len(arrays)
        for i, text in zip(todo, texts, strict=True):
            out[i] = text
        return out

    def decode_padded(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Transcripts for a padded batch `[B, T, num_classes]`, frames within `lengths` only (the
        same arguments as `greedy_decode`)."""
        array = log_probs.detach().float().cpu().numpy()
        return self.decode_batch([array[i, : int(n)] for i, n in enumerate(lengths.tolist())])

    def set_weights(self, alpha: float, beta: float) -> None:
        """Change the LM weight and word bonus without reloading the LM (for tuning)."""
        self.alpha, self.beta = float(alpha), float(beta)
        self._decoder.reset_params(alpha=self.alpha, beta=self.beta)
        # Forked workers hold a copy of the old weights: start new ones on the next batch.
        self._close_pool()

    def close(self) -> None:
        """Stop the worker pool and release the LM (the decoder cannot be used afterwards)."""
        self._close_pool()
        self._decoder.cleanup()

    def __enter__(self) -> BeamSearchDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _search_args(self) -> dict[str, Any]:
        return {
            "beam_width": self.beam_width,
            "beam_prune_logp": self.beam_prune_logp,
            "token_min_logp": self.token_min_logp,
            "hotwords": self.hotwords or None,
            "hotword_weight": self.hotword_weight,
        }

    def _check(self, log_probs: np.ndarray) -> np.ndarray:
        array = np.asarray(log_probs, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.num_classes:
            raise ValueError(
                f"expected log-probs [T, {self.num_classes}] (labels + blank), got shape {array.shape}"
            )
        return array

    def _get_pool(self) -> multiprocessing.pool.Pool | None:
        if self.workers == 1:
            return None
        if self._pool is None:
            # fork: the workers inherit the loaded LM (pyctcdecode refuses spawn pools for this reason).
            self._pool = multiprocessing.get_context("fork").Pool(self.workers)
        return self._pool

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
