"""LM building (`jasper lm build`), beam-search decoding and `jasper lm tune`.

LM tests need KenLM's lmplz/build_binary and the kenlm/pyctcdecode modules, which
`bash scripts/setup_kenlm.sh` installs; without them they are skipped with that reason.
"""

from __future__ import annotations

import gzip
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from jasper import cli
from jasper.decoding import collapse, greedy_decode
from jasper.lm.ngram import LMError, read_ngram_counts, read_unigrams, resolve_lm
from jasper.lm.tool import ENGLISH_LABELS, build_lm, find_tool, import_arpa, load_logits, load_references
from jasper.text import Tokenizer


def _kenlm_missing() -> str | None:
    try:
        find_tool("lmplz")
        find_tool("build_binary")
        import kenlm  # noqa: F401
        import pyctcdecode  # noqa: F401
    except (LMError, ImportError) as e:
        return f"KenLM/pyctcdecode not installed (bash scripts/setup_kenlm.sh): {e}"
    return None


_MISSING = _kenlm_missing()
needs_kenlm = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

LABELS = ENGLISH_LABELS
BLANK = len(LABELS)
MEMORY = "100M"  # lmplz's default (80% of RAM) costs seconds of page faults even on a tiny corpus

# Raw text on purpose: capitals and punctuation must go through jasper.text.normalize.
ANIMALS = "The Cat sat.\nthe cat ran\nthe dog sat\nBIRD!\n\n"
GREETINGS = "hello world\nhello there\nthe world is round\nsay hello to the world\nthe old world\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if _MISSING:
        pytest.skip(_MISSING)
    root = tmp_path_factory.mktemp("lm")
    animals = _write(root / "animals.txt", ANIMALS)
    greetings = _write(root / "greetings.txt", GREETINGS)
    build_lm([animals], root / "unigram", 1, memory=MEMORY)
    build_lm([animals], root / "bigram", 2, memory=MEMORY)
    build_lm([greetings], root / "greetings", 2, memory=MEMORY)
    return {name: root / name for name in ("unigram", "bigram", "greetings")}


def _arpa_log10(arpa: Path, order: int) -> dict[str, float]:
    """log10 probabilities of one order's section of an ARPA file, by n-gram."""
    out, inside = {}, False
    for line in arpa.read_text().splitlines():
        if line.startswith("\\"):
            inside = line == f"\\{order}-grams:"
            continue
        if inside and line.strip():
            fields = line.split("\t")
            out[fields[1]] = float(fields[0])
    return out


# --- Building -------------------------------------------------------------------------------------


@needs_kenlm
def test_unigram_probabilities_are_the_hand_computed_kneser_ney_ones(lm_dirs: dict[str, Path]) -> None:
    # The normalised corpus "the cat sat / the cat ran / the dog sat / bird" has N = 14 tokens
    # (10 words + 4 </s>): the 3, cat 2, sat 2, ran 1, dog 1, bird 1, </s> 4. In an order-1 model
    # the counts are the raw counts, and modified Kneser-Ney (Chen & Goodman, as lmplz computes it)
    # takes its discounts from the count-of-counts n1=3, n2=2, n3=1, n4=1:
    #   Y = n1 / (n1 + 2 n2) = 3/7
    #   D1 = 1 - 2Y n2/n1 = 3/7,  D2 = 2 - 3Y n3/n2 = 19/14,  D3+ = 3 - 4Y n4/n3 = 9/7
    # The discounted mass gamma = (3 D1 + 2 D2 + D3+ [the] + D3+ [</s>]) / N = (46/7) / 14 = 23/49
    # is spread uniformly over the 8 predictable tokens (6 words, </s>, <unk>):
    #   p(w) = (c(w) - D(c(w))) / N + 23/392
    # e.g. p(the) = (3 - 9/7)/14 + 23/392 = 71/392; the eight probabilities sum to 392/392.
    expected = {
        "the": Fraction(71, 392),
        "cat": Fraction(41, 392),
        "sat": Fraction(41, 392),
        "ran": Fraction(39, 392),
        "dog": Fraction(39, 392),
        "bird": Fraction(39, 392),
        "</s>": Fraction(99, 392),
        "<unk>": Fraction(23, 392),
    }
    assert sum(expected.values()) == 1
    arpa = lm_dirs["unigram"] / "lm.arpa"
    got = _arpa_log10(arpa, 1)
    for word, p in expected.items():
        assert got[word] == pytest.approx(math.log10(p), abs=1e-6), word
    assert read_ngram_counts(arpa) == {1: 9}  # the 8 tokens and <s>
    info = json.loads((lm_dirs["unigram"] / "lm.json").read_text())
    assert (info["sentences"], info["words"], info["discount_fallback"]) == (4, 10, False)
    # KenLM's binary formats need bigrams: a unigram LM stays ARPA, and the decoder uses that.
    assert not (lm_dirs["unigram"] / "lm.binary").exists()
    assert resolve_lm(lm_dirs["unigram"])[0] == arpa


@needs_kenlm
def test_bigram_lm_counts_vocabulary_and_scores(lm_dirs: dict[str, Path]) -> None:
    import kenlm

    lm_dir = lm_dirs["bigram"]
    # 1-grams: 6 words + <s>, </s>, <unk>. 2-grams: <s> the, <s> bird, the cat, the dog, cat sat,
    # cat ran, dog sat, sat </s>, ran </s>, bird </s>.
    assert read_ngram_counts(lm_dir / "lm.arpa") == {1: 9, 2: 10}
    assert sorted(read_unigrams(lm_dir / "lm.arpa")) == ["bird", "cat", "dog", "ran", "sat", "the"]
    assert sorted((lm_dir / "unigrams.txt").read_text().split()) == [
        "bird",
        "cat",
        "dog",
        "ran",
        "sat",
        "the",
    ]
    # Four sentences have no bigram seen exactly three times, so the closed-form discounts fail and
    # the build falls back to lmplz's fixed ones, and says so.
    assert json.loads((lm_dir / "lm.json").read_text())["discount_fallback"] is True

    binary, arpa = kenlm.Model(str(lm_dir / "lm.binary")), kenlm.Model(str(lm_dir / "lm.arpa"))
    for sentence in ("the cat sat", "sat cat the", "the zebra sat"):
        assert binary.score(sentence) == pytest.approx(arpa.score(sentence), abs=1e-4)
    assert binary.score("the cat sat") > binary.score("sat cat the")
    assert binary.score("the cat sat") > binary.score("the zebra sat")  # an unseen word costs


@needs_kenlm
def test_imported_upper_case_arpa_matches_the_model_it_came_from(
    lm_dirs: dict[str, Path], tmp_path: Path
) -> None:
    # LibriSpeech's ARPA files are upper case with <UNK>: import lower-cases them for our labels.
    original = (lm_dirs["bigram"] / "lm.arpa").read_text()
    upper = "\n".join(
        line if line.startswith(("\\", "ngram")) else line.upper() for line in original.splitlines()
    )
    with gzip.open(tmp_path / "UPPER.arpa.gz", "wt") as f:
        f.write(upper + "\n")
    info = import_arpa(tmp_path / "UPPER.arpa.gz", tmp_path / "imported", memory=MEMORY)
    assert (info.order, info.ngrams) == (2, {1: 9, 2: 10})
    assert (tmp_path / "imported" / "lm.arpa").read_text() == original
    assert (tmp_path / "imported" / "lm.binary").is_file()
    assert "bird" in (tmp_path / "imported" / "unigrams.txt").read_text().split()


def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path) -> None:
    text = _write(tmp_path / "t.txt", "a b c\n")
    with pytest.raises(LMError, match="order"):
        build_lm([text], tmp_path / "lm", 7)
    with pytest.raises(LMError, match="first value must be 0"):
        build_lm([text], tmp_path / "lm", 3, prune=[1, 1, 1])
    with pytest.raises(LMError, match="non-decreasing"):
        build_lm([text], tmp_path / "lm", 3, prune=[0, 2, 1])
    with pytest.raises(LMError, match="no such text file"):
        build_lm([tmp_path / "absent.txt"], tmp_path / "lm", 3)


def test_missing_kenlm_tool_names_the_setup_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("KENLM_BIN", raising=False)
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    with pytest.raises(LMError, match="setup_kenlm.sh"):
        find_tool("lmplz")


# --- Beam search ----------------------------------------------------------------------------------


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return (torch.from_numpy(x).log_softmax(-1)).numpy()


def _greedy(log_probs: np.ndarray) -> str:
    text = Tokenizer(LABELS).decode(collapse(log_probs.argmax(1).tolist(), BLANK))
    return " ".join(text.split())  # the beam search's output has single spaces, none at the ends


def _frames(spec: list[dict[str, float]]) -> np.ndarray:
    """Log-probs `[T, 29]`, one frame per dict of character -> probability ("" is the blank); the
    rest of each frame gets 1e-4 per class before renormalising."""
    rows = []
    for probs in spec:
        row = np.full(BLANK + 1, 1e-4)
        for ch, p in probs.items():
            row[BLANK if ch == "" else LABELS.index(ch)] = p
        rows.append(row / row.sum())
    return np.log(np.array(rows, dtype=np.float32))


# Greedy reads "helo wrld": the second "l" needs the blank (second best in frame 4) between two
# "l" frames, and the "o" of "world" is second best in frame 9.
HELO_WRLD = _frames(
    [{"h": 0.9}, {"e": 0.9}, {"l": 0.9}, {"l": 0.55, "": 0.45}, {"l": 0.9}, {"o": 0.9}, {" ": 0.9}]
    + [{"w": 0.9}, {"": 0.55, "o": 0.45}, {"r": 0.9}, {"l": 0.9}, {"d": 0.9}]
)


def _random_log_probs(seed: int, frames: int = 120, scale: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _log_softmax((scale * rng.standard_normal((frames, BLANK + 1))).astype(np.float32))


def _peaked_log_probs(seed: int, frames: int = 120) -> np.ndarray:
    """A CTC-like output: each frame one class at about 0.97, blanks half the time."""
    rng = np.random.default_rng(seed)
    best = np.where(rng.random(frames) < 0.5, BLANK, rng.integers(0, BLANK, frames))
    logits = rng.standard_normal((frames, BLANK + 1)).astype(np.float32)
    logits[np.arange(frames), best] += 8.0
    return _log_softmax(logits)


@needs_kenlm
@pytest.mark.parametrize("make", [_random_log_probs, _peaked_log_probs], ids=["random", "peaked"])
def test_beam_width_one_without_lm_is_greedy(make) -> None:
    # With one beam, prefixes ending in a blank and in a label are never merged, so the search keeps
    # exactly the best path: the greedy one.
    from jasper.lm.beam import BeamSearchDecoder

    arrays = [make(seed) for seed in range(8)]
    with BeamSearchDecoder(LABELS, beam_width=1) as decoder:
        assert decoder.decode_batch(arrays) == [_greedy(a) for a in arrays]
    # The same through the padded-batch entry point, against jasper's own greedy decoder.
    padded = torch.zeros(len(arrays), 150, BLANK + 1)
    for i, a in enumerate(arrays):
        padded[i, : len(a)] = torch.from_numpy(a)
    lengths = torch.tensor([len(a) for a in arrays])
    expected = [" ".join(t.split()) for t in greedy_decode(padded, lengths, Tokenizer(LABELS))]
    with BeamSearchDecoder(LABELS, beam_width=1) as decoder:
        assert decoder.decode_padded(padded, lengths) == expected


@needs_kenlm
def test_lm_recovers_words_greedy_misspells(lm_dirs: dict[str, Path]) -> None:
    from jasper.lm.beam import BeamSearchDecoder

    assert _greedy(HELO_WRLD) == "helo wrld"
    with BeamSearchDecoder(LABELS, beam_width=16) as decoder:
        assert decoder.decode(HELO_WRLD) == "helo wrld"  # without an LM the acoustics win
    with BeamSearchDecoder(LABELS, lm_dirs["greetings"], beam_width=16) as decoder:
        assert decoder.has_lm
        assert decoder.decode(HELO_WRLD) == "hello world"
    with BeamSearchDecoder(LABELS, beam_width=16, hotwords=["hello"]) as decoder:
        assert decoder.decode(HELO_WRLD).startswith("hello ")  # a hotword alone fixes its own word


@needs_kenlm
def test_decoding_is_deterministic_with_and_without_workers(lm_dirs: dict[str, Path]) -> None:
    from jasper.lm.beam import BeamSearchDecoder

    arrays = [_random_log_probs(seed, frames=80, scale=1.5) for seed in range(6)] + [HELO_WRLD]
    arrays.insert(2, np.zeros((0, BLANK + 1), np.float32))  # an empty utterance decodes to ""
    with BeamSearchDecoder(LABELS, lm_dirs["greetings"], beam_width=16) as decoder:
        first = decoder.decode_batch(arrays)
        assert decoder.decode_batch(arrays) == first
        assert [decoder.decode(a) for a in arrays] == first
    with BeamSearchDecoder(LABELS, lm_dirs["greetings"], beam_width=16, workers=2) as decoder:
        assert decoder.decode_batch(arrays) == first
        assert decoder.decode_batch(arrays) == first
    assert first[2] == "" and first[-1] == "hello world"


@needs_kenlm
def test_decoder_checks_the_number_of_classes() -> None:
    from jasper.lm.beam import BeamSearchDecoder

    with BeamSearchDecoder(LABELS) as decoder, pytest.raises(ValueError, match="29"):
        decoder.decode(np.zeros((5, 28), np.float32))


# --- Tuning ---------------------------------------------------------------------------------------


@needs_kenlm
def test_tune_writes_the_best_weights_which_the_decoder_then_uses(
    lm_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jasper.lm.beam import BeamSearchDecoder

    lm_dir = tmp_path / "lm"
    build_lm([_write(tmp_path / "g.txt", GREETINGS)], lm_dir, 2, memory=MEMORY)
    logits = tmp_path / "logits.npz"
    np.savez(logits, _ids=np.array(["utt1", "utt2"]), utt1=HELO_WRLD, utt2=HELO_WRLD[:6])
    manifest = tmp_path / "dev.json"
    manifest.write_text(
        '{"audio_filepath": "/data/utt1.wav", "duration": 1.0, "text": "Hello, World!"}\n'
        '{"audio_filepath": "/data/utt2.wav", "duration": 1.0, "text": "hello"}\n'
    )
    argv = ["lm", "tune", "--logits", str(logits), "--manifest", str(manifest), "--lm", str(lm_dir)]
    argv += ["--alphas", "0.5", "1", "--betas", "0", "2", "--beam_width", "8", "--workers", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "greedy: 100.00" in out and "best: alpha" in out

    tuned = json.loads((lm_dir / "tuned.json").read_text())
    assert tuned["wer"] == 0.0 and tuned["greedy_wer"] == 1.0
    assert (tuned["utterances"], tuned["words"], len(tuned["grid"])) == (2, 3, 4)
    with BeamSearchDecoder(LABELS, lm_dir) as decoder:
        assert (decoder.alpha, decoder.beta) == (tuned["alpha"], tuned["beta"])
    with BeamSearchDecoder(LABELS, lm_dir, alpha=0.1, beta=0.2) as decoder:
        assert (decoder.alpha, decoder.beta) == (0.1, 0.2)  # explicit values win


def test_logits_and_references_load_in_both_formats(tmp_path: Path) -> None:
    a, b = np.zeros((3, 29), np.float32), np.ones((5, 29), np.float32)
    torch.save(
        {
            "ids": ["x", "y"],
            "lengths": torch.tensor([3, 5]),
            "logits": {"x": torch.from_numpy(a), "y": torch.from_numpy(b)},
        },
        tmp_path / "l.pt",
    )
    np.savez(tmp_path / "l.npz", _ids=np.array(["x", "y"]), x=a, y=b)
    for name in ("l.pt", "l.npz"):
        ids, arrays = load_logits(tmp_path / name)
        assert ids == ["x", "y"] and [x.shape for x in arrays] == [(3, 29), (5, 29)]
    refs = _write(tmp_path / "refs.tsv", "x\tThe 2 cats.\ny\t\n")
    assert load_references(references=refs) == {"x": "the two cats", "y": ""}
