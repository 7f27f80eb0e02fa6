"""The languages `jasper data synth` renders: alphabet, normaliser, voices and default sentences.

Why a module of its own: a corpus in another language needs four things to agree, and keeping them
in one record is what makes `jasper data synth --language es` one command: the labels of the model
that will train on it (`configs/jasper5x3_cpu_<code>.yaml` has the same ones), the normaliser that
keeps those labels (`jasper.text.NORMALIZERS`), the voices that speak the language, and a sentence
source of the language that a package installs.

English is the corpus `synthetic.py` always rendered (every engine, `voices.CATALOGUE`). Spanish:
  text    Debian `fortunes-es` 1.36 (the quotations are presumed public domain, the package's own
          code is GPL-2+; /usr/share/doc/fortunes-es/copyright), installed by scripts/setup.sh
  voices  espeak-ng's Spanish (Spain) and Latin American voices with its variants (111-118), and
          Kokoro-82M reading Spanish phonemes: its Spanish packs and, for more speakers, its
          Italian, Portuguese and French packs with their own accents (packs keep their English
          catalogue ids 501-554), plus blends of them (6300+ train, 7300+ test). Test voices
          (held out): em_santa, pm_santa and im_nicola and blends of only those, two espeak voices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jasper.datasets import kokoro
from jasper.datasets.voices import CATALOGUE, Voice
from jasper.text import NORMALIZERS

REPO = Path(__file__).resolve().parents[2]
ENGLISH_TEXT = REPO.parent / "shared" / "data" / "text" / "sentences-public.txt"
FORTUNES_ES = Path("/usr/share/games/fortunes/es")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MAX_WORDS = 25


@dataclass(frozen=True)
class Language:
    """What a corpus of one language needs; `labels` match its training config's."""

    code: str
    labels: str
    normalizer: str  # a key of jasper.text.NORMALIZERS
    engines: tuple[str, ...]
    voices: tuple[Voice, ...]
    text: Path  # default sentence source: a file of sentences, or a folder of fortune files
    install: str  # what installs the default text


def _spanish_voices() -> tuple[Voice, ...]:
    espeak = [
        *("es", "es+f2", "es-419", "es-419+f4", "es+m3", "es-419+m5"),
        *("es+f5", "es-419+m2"),  # held out
    ]
    voices = [Voice(111 + i, "espeak", name, held_out=i >= 6, language="es") for i, name in enumerate(espeak)]
    train = ["ef_dora", "em_alex", "if_sara", "pf_dora", "pm_alex", "ff_siwis"]
    test = ["em_santa", "pm_santa", "im_nicola"]
    for held_out, packs in ((False, train), (True, test)):
        voices += [Voice(501 + kokoro.PACKS.index(p), "kokoro", p, held_out, language="es") for p in packs]
        blends = kokoro.make_blends(packs, 40 if not held_out else 6, kokoro.BLEND_SEED + 10 + held_out)
        base = 7300 if held_out else 6300
        voices += [Voice(base + i, "kokoro", b, held_out, language="es") for i, b in enumerate(blends)]
    return tuple(voices)


LANGUAGES = {
    "en": Language(
        "en",
        " abcdefghijklmnopqrstuvwxyz'",
        "english",
        ("espeak", "flite", "festival", "piper", "kokoro"),
        CATALOGUE,
        ENGLISH_TEXT,
        "it comes with ../shared",
    ),
    "es": Language(
        "es",
        " abcdefghijklmnopqrstuvwxyzáéíñóúü",
        "labels",
        ("espeak", "kokoro"),
        _spanish_voices(),
        FORTUNES_ES,
        "apt-get install fortunes-es, or bash scripts/setup.sh",
    ),
}


def read_lines(path: Path) -> list[str]:
    """Candidate sentences of a text source: a file, one per line, or a folder of fortune files.

    Fortunes are split at `%` lines and then into sentences; attributions ("-- author"), lines in
    brackets, sentences with digits (the normaliser does not spell numbers) and sentences of fewer
    than 3 or more than MAX_WORDS words are left out.
    """
    if not path.is_dir():
        return path.read_text(encoding="utf-8").splitlines()
    out = []
    for file in sorted(p for p in path.iterdir() if p.suffix == ".fortunes"):
        for fortune in re.split(r"^%$", file.read_text(encoding="utf-8", errors="replace"), flags=re.M):
            lines = [ln for ln in fortune.splitlines() if not ln.strip().startswith(("--", "("))]
            for sentence in SENTENCE_END.split(" ".join(" ".join(lines).split())):
                if 3 <= len(sentence.split()) <= MAX_WORDS and not re.search(r"\d", sentence):
                    out.append(sentence)
    return out


def load_sentences(paths: Sequence[Path], language: Language = LANGUAGES["en"]) -> list[str]:
    """Sentences of the text sources (`read_lines`), normalised; empty ones and repeats dropped."""
    seen: dict[str, None] = {}
    normalize = NORMALIZERS[language.normalizer]
    for path in paths:
        for line in read_lines(Path(path)):
            sentence = normalize(line, language.labels)
            if sentence:
                seen.setdefault(sentence, None)
    return list(seen)
