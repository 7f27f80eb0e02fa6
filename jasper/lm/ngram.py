"""The n-gram LM on disk: the directory `jasper lm build` writes, and how a decoder finds its parts.

Why a module of its own: beam-search decoding (a library layer) reads LM directories, and the
`jasper lm` tool writes them; both import the layout from here, so neither imports the other.

An LM directory holds lm.arpa (the ARPA model), lm.binary (KenLM's binary of it, when it has bigrams),
unigrams.txt (its vocabulary, one word a line), lm.json (what it was built from), build.log and,
after `jasper lm tune`, tuned.json (alpha and beta).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import IO, Any

ARPA, BINARY, UNIGRAMS, INFO, LOG, TUNED = (
    "lm.arpa",
    "lm.binary",
    "unigrams.txt",
    "lm.json",
    "build.log",
    "tuned.json",
)
SPECIAL_WORDS = {"<s>", "</s>", "<unk>"}


class LMError(Exception):
    """An LM that cannot be built or used; the message says what to do."""


def open_text(path: Path) -> IO[str]:
    """A text file, gzip-compressed when it ends in .gz; undecodable bytes replaced."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def read_ngram_counts(arpa: str | Path) -> dict[int, int]:
    """The `ngram N=count` lines of an ARPA header."""
    counts = {}
    with open_text(Path(arpa)) as f:
        for line in f:
            line = line.strip()
            if line.startswith("ngram "):
                order, count = line[len("ngram ") :].split("=")
                counts[int(order)] = int(count)
            elif line.startswith("\\1-grams:"):
                break
    if not counts:
        raise LMError(f"{arpa}: no ARPA header (\\data\\ with ngram N=count lines)")
    return counts


def read_unigrams(arpa: str | Path) -> list[str]:
    """The words of an ARPA file's 1-gram section, without <s>, </s> and <unk>."""
    words = []
    with open_text(Path(arpa)) as f:
        for line in f:
            if line.startswith("\\1-grams:"):
                break
        for line in f:
            parts = line.split("\t")
            if len(parts) < 2:
                if line.startswith("\\"):
                    break
                continue
            word = parts[1].strip()
            if word not in SPECIAL_WORDS:
                words.append(word)
    return words


def resolve_lm(lm: str | Path) -> tuple[Path, list[str] | None, dict[str, Any]]:
    """-> (KenLM model file, its vocabulary or None, tuned weights or {}) for an LM directory or file.

    A directory from `build_lm` gives its binary (else its ARPA), `unigrams.txt` and `tuned.json`.
    A file is used as it is: an ARPA file's vocabulary is read from it; a binary's from a
    `unigrams.txt` beside it when there is one.
    """
    path = Path(lm)
    if path.is_dir():
        model = path / BINARY if (path / BINARY).is_file() else path / ARPA
        if not model.is_file():
            raise LMError(f"{path}: no {BINARY} or {ARPA} (build one with `jasper lm build`)")
        unigrams = read_unigrams(model) if model.name == ARPA else _read_words(path / UNIGRAMS)
        tuned = json.loads((path / TUNED).read_text()) if (path / TUNED).is_file() else {}
        return model, unigrams, tuned
    if not path.is_file():
        raise LMError(f"{path}: no such LM file or directory")
    if path.name.endswith((".arpa", ".arpa.gz")):
        return path, read_unigrams(path), {}
    return path, _read_words(path.parent / UNIGRAMS), {}


def _read_words(path: Path) -> list[str] | None:
    return path.read_text().split() if path.is_file() else None
