"""Transcript text: label ids for CTC and the transcript normalisers (English, or any alphabet).

A config's `labels` lists the output characters (space, "a".."z", apostrophe for the English
models); the CTC blank is not in that list, it is appended by code at index `len(labels)`.
`Tokenizer` maps between characters and those ids.

`normalize` reproduces the reference's `english_cleaners` pipeline (ASCII transliteration,
lower-casing, number and abbreviation expansion, punctuation removal) so that models trained
here see the same targets as NVIDIA's. It differs from the reference only where the reference
misbehaves: it never prints, never returns None on failure (it falls back to a simpler
normalisation instead), and it re-collapses spaces left behind by the final label filter, so
its output is always a clean, idempotent string of label characters.

`normalize_to_labels` is for every other alphabet (a config's `normalizer: labels`): the English
cleaner transliterates to ASCII and spells numbers in English, so "año" would become "ano" and
a Cyrillic transcript would vanish. It lower-cases, keeps every character that is a label, and
maps only what the labels lack: an accented letter to its base letter when that is a label,
punctuation to a space; anything else (digits included) is dropped. `NORMALIZERS` names both.
"""

from __future__ import annotations

import functools
import logging
import re
import string
import unicodedata
from collections.abc import Iterable

import inflect

logger = logging.getLogger(__name__)

_INFLECT = inflect.engine()

# Characters NFKD decomposition leaves non-ASCII but which have a conventional ASCII spelling.
_TRANSLITERATIONS = {
    "\u2018": "'",  # left single quotation mark
    "\u2019": "'",  # right single quotation mark / typographic apostrophe
    "\u201a": "'",  # single low-9 quotation mark
    "\u201b": "'",  # single high-reversed-9 quotation mark
    "\u201c": '"',  # left double quotation mark
    "\u201d": '"',  # right double quotation mark
    "\u201e": '"',  # double low-9 quotation mark
    "ß": "ss",
    "æ": "ae",
    "Æ": "AE",
    "œ": "oe",
    "Œ": "OE",
    "ø": "o",
    "Ø": "O",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "ð": "d",
    "Ð": "D",
    "þ": "th",
    "Þ": "TH",
    "ı": "i",
}

_COMMA_NUMBER_RE = re.compile(r"([0-9][0-9\,]+[0-9])")
_POUNDS_RE = re.compile(r"£([0-9\,]*[0-9]+)")
_DOLLARS_RE = re.compile(r"\$([0-9\.\,]*[0-9]+)")
_DECIMAL_RE = re.compile(r"([0-9]+\.[0-9]+)")
_ORDINAL_RE = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER_RE = re.compile(r"[0-9]+")
_WHITESPACE_RE = re.compile(r"\s+")

_ABBREVIATIONS = [
    (re.compile(rf"\b{abbr}\.", re.IGNORECASE), expansion)
    for abbr, expansion in [
        ("mrs", "misess"),
        ("mr", "mister"),
        ("dr", "doctor"),
        ("st", "saint"),
        ("co", "company"),
        ("jr", "junior"),
        ("maj", "major"),
        ("gen", "general"),
        ("drs", "doctors"),
        ("rev", "reverend"),
        ("lt", "lieutenant"),
        ("hon", "honorable"),
        ("sgt", "sergeant"),
        ("capt", "captain"),
        ("esq", "esquire"),
        ("ltd", "limited"),
        ("col", "colonel"),
        ("ft", "fort"),
    ]
]


class Tokenizer:
    """Maps transcripts to CTC label ids and back.

    Ids follow the reference's layout, which pretrained checkpoints depend on: id `i` is
    `labels[i]` and the blank is the last class, `len(labels)`.
    """

    def __init__(self, labels: Iterable[str]) -> None:
        self.labels: tuple[str, ...] = tuple(labels)
        for label in self.labels:
            if not isinstance(label, str) or len(label) != 1:
                raise ValueError(f"labels must be single characters, got {label!r}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {list(self.labels)}")
        self.blank: int = len(self.labels)
        self.num_classes: int = len(self.labels) + 1
        self._ids = {label: i for i, label in enumerate(self.labels)}

    def encode_with_stats(self, text: str) -> tuple[list[int], int]:
        """Return the ids of `text` and how many of its characters had no label.

        Unknown characters are dropped rather than raised on, so one odd transcript cannot stop
        a training run; the count lets the caller report how much text was lost.
        """
        ids = [self._ids[ch] for ch in text if ch in self._ids]
        return ids, len(text) - len(ids)

    def encode(self, text: str) -> list[int]:
        """Return the ids of `text`, silently dropping characters that have no label."""
        return self.encode_with_stats(text)[0]

    def decode(self, ids: Iterable[int]) -> str:
        """Return the characters of `ids`; blanks map to nothing.

        This is a plain id-to-character map: collapsing CTC repeats is the decoder's job.
        """
        chars = []
        for raw in ids:
            i = int(raw)
            if i == self.blank:
                continue
            if not 0 <= i < self.blank:
                raise ValueError(f"label id {i} out of range [0, {self.num_classes})")
            chars.append(self.labels[i])
        return "".join(chars)


@functools.lru_cache(maxsize=4096)
def _ascii_form(ch: str) -> str:
    """ASCII spelling of one non-ASCII character, or "" when it has none."""
    if ch in _TRANSLITERATIONS:
        return _TRANSLITERATIONS[ch]
    if ch.isspace():
        # Unusual separators (e.g. U+2028) must still separate words.
        return " "
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return decomposed if decomposed.isascii() else ""


def to_ascii(text: str) -> str:
    """Transliterate `text` to ASCII (é -> e, ’ -> '), dropping characters with no ASCII form.

    Everything downstream (number regexes, punctuation table, labels) is ASCII-only, so this
    runs first. Drops are logged at debug level: they are routine (em dashes, currency signs)
    and the reference's printing of each one drowned out real problems.
    """
    if text.isascii():
        return text
    out = []
    dropped = 0
    for ch in text:
        if ord(ch) < 127:
            out.append(ch)
            continue
        ascii_form = _ascii_form(ch)
        if not ascii_form:
            dropped += 1
        out.append(ascii_form)
    if dropped:
        logger.debug("dropped %d character(s) with no ASCII form from %r", dropped, text)
    return "".join(out)


def _expand_dollars(m: re.Match[str]) -> str:
    # Commas are removed here too: the digit-group rule only strips those between digits.
    amount = m.group(1).replace(",", "")
    parts = amount.split(".")
    if len(parts) > 2:
        return amount + " dollars"  # not a price; let the decimal and integer rules read it
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    dollar_unit = "dollar" if dollars == 1 else "dollars"
    cent_unit = "cent" if cents == 1 else "cents"
    if dollars and cents:
        return f"{dollars} {dollar_unit}, {cents} {cent_unit}"
    if dollars:
        return f"{dollars} {dollar_unit}"
    if cents:
        return f"{cents} {cent_unit}"
    return "zero dollars"


# inflect type-checks every call and dominates normalisation time; transcripts repeat the same
# numbers (years, small counts) so much that memoising the spellings makes it cheap.
@functools.lru_cache(maxsize=65536)
def _spell_ordinal(ordinal: str) -> str:
    return _INFLECT.number_to_words(ordinal)


@functools.lru_cache(maxsize=65536)
def _spell_integer(digits: str) -> str:
    if digits[0] == "0":
        # Codes such as "007" are read digit by digit.
        return _INFLECT.number_to_words(digits, andword="", group=1)
    n = int(digits)
    if 1000 < n < 3000:
        # Read as years: "nineteen ninety", "two thousand five", "nineteen hundred".
        if n == 2000:
            return "two thousand"
        if 2000 < n < 2010:
            return "two thousand " + _INFLECT.number_to_words(n % 100)
        if n % 100 == 0:
            return _INFLECT.number_to_words(n // 100) + " hundred"
        return _INFLECT.number_to_words(n, andword="", zero="oh", group=2).replace(", ", " ")
    if n > 1_000_000_000 and n % 10000 != 0:
        # Long non-round numbers are phone numbers and ids, read digit by digit.
        return _INFLECT.number_to_words(n, andword="", group=1)
    return _INFLECT.number_to_words(n, andword="")


def expand_numbers(text: str) -> str:
    """Spell out the numbers in lower-case `text` as the reference does, so targets contain words.

    The rules run in the reference's order, each rewriting what earlier ones left: "$3.50" becomes
    "3 dollars, 50 cents" before the integers are spelled. Output may still hold inflect's
    hyphens and commas; `normalize` turns those into spaces.
    """
    text = _COMMA_NUMBER_RE.sub(lambda m: m.group(1).replace(",", ""), text)
    # `to_ascii` drops "£", so within `normalize` this never matches; kept for direct callers.
    text = _POUNDS_RE.sub(r"\1 pounds", text)
    text = _DOLLARS_RE.sub(_expand_dollars, text)
    text = _DECIMAL_RE.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL_RE.sub(lambda m: _spell_ordinal(m.group(0)), text)
    return _NUMBER_RE.sub(lambda m: _spell_integer(m.group(0)), text)


def expand_abbreviations(text: str) -> str:
    """Expand titles and the like ("mr." -> "mister") before punctuation removal loses the period."""
    for pattern, expansion in _ABBREVIATIONS:
        text = pattern.sub(expansion, text)
    return text


@functools.lru_cache(maxsize=16)
def _punctuation_table(labels: tuple[str, ...]) -> dict[int, str]:
    # Punctuation that is itself a label (the apostrophe) is kept; "&" and "+" are spelled out.
    removed = [ch for ch in string.punctuation if ch not in "+&" and ch not in labels]
    return str.maketrans("".join(removed), " " * len(removed))


def _finish(text: str, labels: tuple[str, ...]) -> str:
    """Steps shared by the full and the fallback normalisation: punctuation, spaces, label filter."""
    text = text.translate(_punctuation_table(labels))
    text = text.replace("&", " and ").replace("+", " plus ")
    text = _WHITESPACE_RE.sub(" ", text).strip()
    allowed = set(labels)
    text = "".join(ch for ch in text if ch in allowed)
    # The filter can leave a double or edge space where it removed a character between spaces.
    return _WHITESPACE_RE.sub(" ", text).strip()


def normalize(text: str, labels: Iterable[str]) -> str:
    """Normalise a transcript the way the reference's `english_cleaners` does.

    Steps: ASCII transliteration, lower-casing, number expansion, abbreviation expansion,
    punctuation to spaces ("&" -> "and", "+" -> "plus"), whitespace collapsing, and removal of
    every character that is not a label. Matching the reference matters because pretrained
    checkpoints were trained on exactly these targets. If an expansion step fails (e.g. a number
    too large for inflect), the transcript is still usable: it is lower-cased and filtered
    without expansion, and a warning is logged, instead of the reference's None.
    """
    labels = tuple(labels)
    try:
        expanded = expand_abbreviations(expand_numbers(to_ascii(text).lower()))
    except Exception as exc:
        logger.warning(
            "normalizing %r failed (%s: %s); using lower-case and filtering only",
            text,
            type(exc).__name__,
            exc,
        )
        expanded = text.lower()
    return _finish(expanded, labels)


def _label_form(ch: str, allowed: frozenset[str]) -> str:
    """What a character that is not a label becomes: its accent-free form if that is all labels,
    a space for punctuation, symbols and separators, otherwise nothing."""
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    if base and base != ch and all(c in allowed for c in base):
        return base
    if ch.isspace() or unicodedata.category(ch)[0] in "PSZ":
        return " "
    return ""


def normalize_to_labels(text: str, labels: Iterable[str]) -> str:
    """Normalise a transcript for any alphabet: keep the labels, map only what they lack.

    The text is NFC-composed (so "n" + combining tilde is the label "ñ") and lower-cased
    unless the labels have upper-case letters. Typographic apostrophes count as "'".
    """
    labels = tuple(labels)
    allowed = frozenset(labels)
    text = unicodedata.normalize("NFC", text)
    if not any(ch != ch.lower() for ch in labels):
        text = text.lower()
    text = text.translate(_APOSTROPHES)
    out = "".join(ch if ch in allowed else _label_form(ch, allowed) for ch in text)
    out = _WHITESPACE_RE.sub(" ", out).strip()
    if " " not in allowed:
        out = out.replace(" ", "")
    return out


_APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'"})
NORMALIZERS = {"english": normalize, "labels": normalize_to_labels}


def text_to_ids(
    text: str, tokenizer: Tokenizer, normalize_transcripts: bool, normalizer: str = "english"
) -> list[int]:
    """Turn a dataset transcript into CTC target ids.

    With `normalize_transcripts` the text goes through the named normaliser first (`english`,
    the reference's, or `labels`); without it the transcript is assumed already clean and
    characters outside the labels are dropped.
    """
    if normalize_transcripts:
        text = NORMALIZERS[normalizer](text, tokenizer.labels)
    return tokenizer.encode(text)
