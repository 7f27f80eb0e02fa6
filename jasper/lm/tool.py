"""`jasper lm build|tune`: n-gram word LMs for beam-search decoding, and the LM weights that suit a model.

A character CTC model trained briefly spells words by ear ("we tok r wapeopor"); beam search with a
word LM (`jasper.lm.beam.BeamSearchDecoder`) turns such output into words, the cheapest large WER
gain there is. `build` estimates the LM with KenLM's own programs: `lmplz` (modified Kneser-Ney,
on-disk, fast on corpora of billions of words) writes the ARPA text, `build_binary` the memory-mapped
binary that the decoder loads at once and that forked decoding workers share.
`bash scripts/setup_kenlm.sh` compiles and installs both. The text goes through
`jasper.text.normalize`, the code that cleans the training transcripts, so that LM words and model
output are spelled alike. `tune` grid-searches the LM weight (alpha) and the word bonus (beta) on
log-probs saved by `jasper infer --save_logits`, against their references.

An LM directory (`build --out`) holds:
  lm.arpa        the model as ARPA text
  lm.binary      the same model in KenLM's binary format, what the decoder loads (order 2 and up)
  unigrams.txt   its vocabulary, one word a line (the decoder's trie of known words)
  lm.json        how it was built: sources, order, pruning, n-gram counts
  build.log      lmplz's and build_binary's output
  tuned.json     the best alpha and beta found by `tune`: the decoder's defaults when present
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import string
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from jasper.faults import Skipped
from jasper.lm.ngram import (
    ARPA,
    BINARY,
    INFO,
    LOG,
    TUNED,
    UNIGRAMS,
    LMError,
    open_text,
    read_ngram_counts,
    read_unigrams,
)
from jasper.text import normalize

if TYPE_CHECKING:
    from jasper.lm.beam import BeamSearchDecoder

ENGLISH_LABELS = (" ", *string.ascii_lowercase, "'")
MAX_ORDER = 6  # the KENLM_MAX_ORDER that scripts/setup_kenlm.sh and PyPI's kenlm are built with
# What lmplz prints when the closed-form Kneser-Ney discounts fail (small or artificial corpora).
_DISCOUNT_ERROR = "--discount_fallback"


# --- Building -------------------------------------------------------------------------------------


@dataclass
class LMInfo:
    """What `build_lm` made and from what (written to `lm.json`)."""

    order: int
    sources: list[str]
    sentences: int | None  # None for an imported ARPA file
    words: int | None
    ngrams: dict[int, int]
    prune: list[int] = field(default_factory=list)
    discount_fallback: bool = False
    binary_type: str = "trie"
    labels: str = "".join(ENGLISH_LABELS)


def find_tool(name: str) -> Path:
    """Path of a KenLM program: `$KENLM_BIN/name`, else on PATH, else beside this Python (the venv's
    bin/, where scripts/setup_kenlm.sh puts it)."""
    candidates = []
    if os.environ.get("KENLM_BIN"):
        candidates.append(Path(os.environ["KENLM_BIN"]) / name)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(Path(sys.executable).parent / name)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise LMError(f"KenLM's {name} is not installed: run `bash scripts/setup_kenlm.sh` (or set KENLM_BIN)")


def sentences(
    paths: Iterable[str | Path], labels: Sequence[str] = ENGLISH_LABELS, skipped: Skipped | None = None
) -> Iterator[str]:
    """Normalised, non-empty lines of text files (`.gz` read as gzip), one sentence a line.

    A missing or unreadable file, and lines that are not UTF-8 text (undecodable bytes, NUL), raise
    `LMError`, or are left out and reported to `skipped` when given: a corrupt gzip's lines before
    the damage are used.
    """
    for path in map(Path, paths):
        if not path.is_file():
            _bad(skipped, path, "no such text file")
            continue
        read = bad = 0
        try:
            with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as f:
                for raw in f:
                    read += 1
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        line = "\x00"
                    if "\x00" in line:
                        bad += 1
                        continue
                    text = normalize(line, labels)
                    if text:
                        yield text
        except (OSError, EOFError) as e:
            _bad(skipped, path, f"unreadable after line {read} ({e}); the lines before are used")
        if bad:
            _bad(skipped, path, f"not text ({bad} of {read} lines undecodable or with NUL bytes, left out)")


def _bad(skipped: Skipped | None, path: Path, reason: str) -> None:
    if skipped is None:
        raise LMError(f"{path}: {reason}")
    skipped.add(path, LMError(f"{path}: {reason}"))


def _check_prune(prune: Sequence[int], order: int) -> list[int]:
    prune = list(prune)
    if not prune:
        return prune
    if len(prune) > order:
        raise LMError(f"--prune has {len(prune)} values for an order-{order} model")
    if prune[0] != 0:
        raise LMError("--prune: unigrams cannot be pruned, the first value must be 0")
    if any(b < a for a, b in zip(prune, prune[1:], strict=False)) or min(prune) < 0:
        raise LMError(f"--prune values must be non-negative and non-decreasing, got {prune}")
    return prune


def _lmplz(
    text: Iterable[str],
    out: Path,
    order: int,
    prune: Sequence[int],
    memory: str,
    discount_fallback: bool,
    log: IO[str],
) -> tuple[int, int, bool]:
    """Feed sentences to lmplz on stdin; -> (sentences, words, whether lmplz failed on discounts)."""
    cmd = [str(find_tool("lmplz")), "-o", str(order), "-S", memory, "-T", str(out) + "/", "--arpa"]
    cmd += [str(out / ARPA)]
    if prune:
        cmd += ["--prune", *map(str, prune)]
    if discount_fallback:
        cmd += ["--discount_fallback"]
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    n_sentences = n_words = 0
    with subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdin is not None
        try:
            for sentence in text:
                proc.stdin.write(sentence + "\n")
                n_sentences += 1
                n_words += sentence.count(" ") + 1
            proc.stdin.close()
        except BrokenPipeError:
            pass  # lmplz stopped early; its exit status and log say why
    if n_words == 0:
        raise LMError("no text left after normalisation: the LM would be empty")
    if proc.returncode == 0:
        return n_sentences, n_words, False
    log.flush()
    tail = (out / LOG).read_text().splitlines()[-5:]
    if any(_DISCOUNT_ERROR in line for line in tail) and not discount_fallback:
        return n_sentences, n_words, True
    raise LMError(f"lmplz failed (exit {proc.returncode}):\n" + "\n".join(tail))


def build_lm(
    text_files: Sequence[str | Path],
    out_dir: str | Path,
    order: int,
    *,
    prune: Sequence[int] = (),
    labels: Sequence[str] = ENGLISH_LABELS,
    memory: str = "1G",
    binary_type: str = "trie",
    discount_fallback: bool = False,
    skipped: Skipped | None = None,
) -> LMInfo:
    """Build an LM directory (see the module docstring) from text files.

    lmplz refuses corpora whose count statistics cannot give Kneser-Ney discounts (tiny or artificial
    ones); then the build is redone with lmplz's fallback discounts (0.5, 1, 1.5) and `lm.json` says
    so. `discount_fallback` uses them from the start. Bad text files and lines raise `LMError`, or
    go to `skipped` when given (see `sentences`).
    """
    if not 1 <= order <= MAX_ORDER:
        raise LMError(f"order must be between 1 and {MAX_ORDER}, got {order}")
    prune = _check_prune(prune, order)
    out = _fresh_dir(out_dir)
    with (out / LOG).open("w") as log:
        n_sentences, n_words, failed = _lmplz(
            sentences(text_files, labels, skipped), out, order, prune, memory, discount_fallback, log
        )
        if failed:
            print("lmplz cannot estimate discounts on this small corpus: rebuilding with --discount_fallback")
            discount_fallback = True
            again = None if skipped is None else Skipped(skipped.tool, echo=False)  # reported once
            n_sentences, n_words, _ = _lmplz(
                sentences(text_files, labels, again), out, order, prune, memory, discount_fallback, log
            )
        _binary_and_unigrams(out, memory, binary_type, log)
    info = LMInfo(
        order=order,
        sources=[str(p) for p in text_files],
        sentences=n_sentences,
        words=n_words,
        ngrams=read_ngram_counts(out / ARPA),
        prune=prune,
        discount_fallback=discount_fallback,
        binary_type=binary_type,
        labels="".join(labels),
    )
    (out / INFO).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


def import_arpa(
    arpa: str | Path, out_dir: str | Path, *, memory: str = "1G", binary_type: str = "trie"
) -> LMInfo:
    """Make an LM directory from an existing ARPA file (`.gz` read as gzip), such as LibriSpeech's
    3-gram and 4-gram models. Its words are lower-cased, as `normalize` spells transcripts (the
    LibriSpeech files are upper-case); `<UNK>` becomes KenLM's `<unk>`."""
    if not Path(arpa).is_file():
        raise LMError(f"{arpa}: no such ARPA file")
    out = _fresh_dir(out_dir)
    with open_text(Path(arpa)) as src, (out / ARPA).open("w") as dst:
        for line in src:
            dst.write(line.lower())
    ngrams = read_ngram_counts(out / ARPA)
    with (out / LOG).open("w") as log:
        _binary_and_unigrams(out, memory, binary_type, log)
    info = LMInfo(
        order=max(ngrams),
        sources=[str(arpa)],
        sentences=None,
        words=None,
        ngrams=ngrams,
        binary_type=binary_type,
    )
    (out / INFO).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


def _fresh_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (BINARY, TUNED):  # from an earlier build into the same directory
        (out / stale).unlink(missing_ok=True)
    return out


def _binary_and_unigrams(out: Path, memory: str, binary_type: str, log: IO[str]) -> None:
    """`lm.binary` (KenLM's binary formats need bigrams: a unigram LM stays ARPA) and `unigrams.txt`."""
    if max(read_ngram_counts(out / ARPA)) > 1:
        cmd = [str(find_tool("build_binary")), "-S", memory, binary_type, str(out / ARPA), str(out / BINARY)]
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise LMError(f"build_binary failed: see {out / LOG}")
    (out / UNIGRAMS).write_text("".join(w + "\n" for w in read_unigrams(out / ARPA)))


# --- Tuning -------------------------------------------------------------------------------------


def load_logits(path: str | Path) -> tuple[list[str], list[np.ndarray]]:
    """(utterance ids, log-prob arrays `[T_i, C]`) from a `jasper infer --save_logits` file: `.npz`
    (an array per id and `_ids` for the order) or a `torch.save` of `{"ids", "logits": {id: tensor}}`."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as data:
            ids = [str(i) for i in data["_ids"]]
            return ids, [data[i].astype(np.float32) for i in ids]
    import torch

    data = torch.load(path, map_location="cpu")
    ids = list(data["ids"])
    return ids, [np.asarray(data["logits"][i], dtype=np.float32) for i in ids]


def load_references(
    manifests: Sequence[str | Path] = (),
    references: str | Path | None = None,
    labels: Sequence[str] = ENGLISH_LABELS,
    dataset_dir: str | Path = ".",
) -> dict[str, str]:
    """Normalised reference transcripts by utterance id, from manifests (ids are the audio files'
    stems, as `jasper infer` names them) or from a `<id><TAB><text>` file."""
    out: dict[str, str] = {}
    if references is not None:
        for line in Path(references).read_text().splitlines():
            if line.strip():
                uid, _, text = line.partition("\t")
                out[uid] = normalize(text, labels)
    if manifests:
        from jasper import config
        from jasper.data import load_utterances, unique_ids
        from jasper.text import Tokenizer

        ds_cfg = config.fill({"min_duration": 0.0}, config.AUDIO_DATASET)
        utts, _ = load_utterances(manifests, dataset_dir, Tokenizer(labels), ds_cfg, check_files=False)
        out.update(zip(unique_ids([u.id for u in utts]), [u.text for u in utts], strict=True))
    return out


@dataclass(frozen=True)
class GridPoint:
    """Corpus WER (a fraction) at one LM weight and word bonus."""

    alpha: float
    beta: float
    wer: float


def grid_search(
    decoder: BeamSearchDecoder,
    logits: Sequence[np.ndarray],
    references: Sequence[str],
    alphas: Sequence[float],
    betas: Sequence[float],
) -> list[GridPoint]:
    """Corpus WER of `decoder` (which has an LM) at every (alpha, beta)."""
    from jasper.metrics import wer

    points = []
    for alpha in alphas:
        for beta in betas:
            decoder.set_weights(alpha, beta)
            points.append(GridPoint(alpha, beta, wer(decoder.decode_batch(logits), list(references))))
    return points


def format_grid(points: Sequence[GridPoint]) -> str:
    """WER (%) table: one row per alpha, one column per beta; the best cell starred."""
    alphas = sorted({p.alpha for p in points})
    betas = sorted({p.beta for p in points})
    cell = {(p.alpha, p.beta): p.wer for p in points}
    best = min(points, key=lambda p: p.wer)
    lines = ["alpha \\ beta " + "".join(f"{b:>9g}" for b in betas)]
    for a in alphas:
        row = [
            f"{100 * cell[a, b]:8.2f}" + ("*" if (a, b) == (best.alpha, best.beta) else " ") for b in betas
        ]
        lines.append(f"{a:>12g} " + "".join(row))
    return "\n".join(lines)


# --- Command line -------------------------------------------------------------------------------


def _labels(model_config: str | None) -> tuple[str, ...]:
    if model_config is None:
        return ENGLISH_LABELS
    from jasper import config

    return tuple(config.load(model_config)["labels"])


def _add_build_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--text", nargs="+", metavar="FILE", help="text files (.gz allowed), a sentence a line"
    )
    source.add_argument(
        "--arpa",
        metavar="FILE",
        help="use this ARPA model (.gz allowed, e.g. LibriSpeech's 4-gram) instead of estimating one: its "
        "words are lower-cased, then the binary and vocabulary are made; --order, --prune, "
        "--discount_fallback and --model_config do not apply",
    )
    p.add_argument("--order", type=int, default=4, help=f"n-gram order, 1 to {MAX_ORDER} (default 4)")
    p.add_argument("--out", required=True, metavar="DIR", help="LM directory to write")
    p.add_argument(
        "--prune",
        nargs="+",
        type=int,
        default=[],
        metavar="N",
        help="drop n-grams seen at most N times, one N per order from unigrams on (the first must be 0; "
        "the last repeats for higher orders): `--prune 0 0 1` drops singleton 3-grams and above",
    )
    p.add_argument(
        "--discount_fallback",
        action="store_true",
        help="use lmplz's fallback discounts (0.5, 1, 1.5) from the start; without it they are used only "
        "when lmplz cannot estimate discounts (tiny or artificial text)",
    )
    p.add_argument(
        "--memory",
        default="1G",
        help="sorting memory for lmplz and build_binary, as for GNU sort: 1G, 500M, 50%% (default 1G; "
        "give more for corpora of hundreds of millions of words)",
    )
    p.add_argument(
        "--binary_type",
        choices=("trie", "probing"),
        default="trie",
        help="KenLM binary layout: trie is smallest, probing fastest (default trie)",
    )
    p.add_argument(
        "--model_config", help="normalise to this config's labels (default: English, a-z ' and space)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first missing or unreadable text file or undecodable line (default: report "
        "it, leave it out, build from the rest, exit 3)",
    )


def _add_tune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--logits", required=True, help="log-probs saved by `jasper infer --save_logits` (.npz or torch)"
    )
    refs = p.add_mutually_exclusive_group(required=True)
    refs.add_argument(
        "--manifest", nargs="+", metavar="FILE", help="manifests with the reference transcripts"
    )
    refs.add_argument("--references", metavar="FILE", help="reference transcripts as `<id><TAB><text>` lines")
    p.add_argument("--dataset_dir", default=".", help="directory the manifests' audio paths are relative to")
    p.add_argument(
        "--lm", required=True, help="LM directory from `jasper lm build`, or a KenLM .arpa/.binary file"
    )
    p.add_argument(
        "--alphas",
        nargs="+",
        type=float,
        default=[0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
        help="LM weights to try (default 0.25 0.5 0.75 1 1.5 2)",
    )
    p.add_argument(
        "--betas",
        nargs="+",
        type=float,
        default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0],
        help="word insertion bonuses to try (default 0 0.5 1 1.5 2 3)",
    )
    p.add_argument("--beam_width", type=int, default=64, help="beams kept per frame (default 64)")
    p.add_argument("--hotwords", nargs="+", default=[], help="words to favour while decoding")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (default: all CPUs)"
    )
    p.add_argument(
        "--model_config", help="the model's config, for its labels (default: English, a-z ' and space)"
    )
    p.add_argument(
        "--out",
        help="where to write the best alpha and beta as JSON (default: tuned.json in the LM directory)",
    )


def _add_decode_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--logits", required=True, help="log-probs saved by `jasper infer --save_logits` (.npz or torch)"
    )
    p.add_argument("--lm", help="LM directory from `jasper lm build` or a KenLM file (default: no LM)")
    p.add_argument("--out", required=True, help="predictions file: `<utterance id><TAB><text>` lines")
    p.add_argument("--beam_width", type=int, default=64, help="beams kept per frame (default 64)")
    p.add_argument("--alpha", type=float, help="LM weight (default: the LM directory's tuned.json, else 0.5)")
    p.add_argument("--beta", type=float, help="word insertion bonus (default: tuned.json, else 1.5)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    p.add_argument("--model_config", help="config whose labels the model outputs (default: English labels)")


STEPS = {
    "build": ("build an n-gram word LM (ARPA + KenLM binary) from text files", _add_build_arguments),
    "tune": ("grid-search the LM weight alpha and word bonus beta on saved log-probs", _add_tune_arguments),
    "decode": (
        "beam-search decode saved log-probs (with an LM) into a predictions file",
        _add_decode_arguments,
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="step", metavar="STEP", required=True)
    for name, (help_text, add) in STEPS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))


def _run_build(args: argparse.Namespace) -> int:
    if args.arpa:
        info = import_arpa(args.arpa, args.out, memory=args.memory, binary_type=args.binary_type)
        counts = ", ".join(f"{n}-grams {c}" for n, c in sorted(info.ngrams.items()))
        print(f"imported an order-{info.order} LM: {counts}")
        return _print_written(args.out)
    skipped = Skipped("lm build", strict=args.strict)
    info = build_lm(
        args.text,
        args.out,
        args.order,
        prune=args.prune,
        labels=_labels(args.model_config),
        memory=args.memory,
        binary_type=args.binary_type,
        discount_fallback=args.discount_fallback,
        skipped=skipped,
    )
    counts = ", ".join(f"{n}-grams {c}" for n, c in sorted(info.ngrams.items()))
    print(f"{info.sentences} sentences, {info.words} words -> order-{info.order} LM: {counts}")
    _print_written(args.out)
    return skipped.finish(len(args.text) - len({item for item, _ in skipped.items}), "text files")


def _print_written(out: str) -> int:
    written = [Path(out) / name for name in (ARPA, BINARY, UNIGRAMS, INFO)]
    print("wrote " + ", ".join(str(p) for p in written if p.is_file()))
    return 0


def _greedy(log_probs: np.ndarray, labels: Sequence[str]) -> str:
    from jasper.decoding import collapse

    text = "".join(labels[i] for i in collapse(log_probs.argmax(axis=1).tolist(), len(labels)))
    return " ".join(text.split())


def _run_tune(args: argparse.Namespace) -> int:
    from jasper.lm.beam import BeamSearchDecoder
    from jasper.metrics import wer

    labels = _labels(args.model_config)
    if args.out is None and not Path(args.lm).is_dir():
        raise LMError("--lm is a file: say where the results go with --out")
    out = Path(args.out) if args.out else Path(args.lm) / TUNED
    ids, logits = load_logits(args.logits)
    refs = load_references(args.manifest or (), args.references, labels, args.dataset_dir)
    missing = [i for i in ids if i not in refs]
    if missing:
        raise LMError(f"{len(missing)} utterance(s) of {args.logits} have no reference, e.g. {missing[0]!r}")
    references = [refs[i] for i in ids]
    n_words = sum(len(r.split()) for r in references)
    print(f"{len(ids)} utterances, {n_words} reference words; {len(args.alphas) * len(args.betas)} settings")

    greedy_wer = wer([_greedy(a, labels) for a in logits], references)
    with BeamSearchDecoder(
        labels, args.lm, beam_width=args.beam_width, hotwords=args.hotwords, workers=args.workers
    ) as decoder:
        points = grid_search(decoder, logits, references, args.alphas, args.betas)
    best = min(points, key=lambda p: p.wer)

    print(f"WER (%) at beam width {args.beam_width}; greedy: {100 * greedy_wer:.2f}")
    print(format_grid(points))
    print(f"best: alpha {best.alpha:g}, beta {best.beta:g}, WER {100 * best.wer:.2f}%")
    result = {
        "alpha": best.alpha,
        "beta": best.beta,
        "wer": best.wer,
        "greedy_wer": greedy_wer,
        "beam_width": args.beam_width,
        "utterances": len(ids),
        "words": n_words,
        "logits": str(args.logits),
        "lm": str(args.lm),
        "grid": [asdict(p) for p in points],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _run_decode(args: argparse.Namespace) -> int:
    from jasper.lm.beam import BeamSearchDecoder

    ids, logits = load_logits(args.logits)
    with BeamSearchDecoder(
        _labels(args.model_config),
        args.lm,
        beam_width=args.beam_width,
        alpha=args.alpha,
        beta=args.beta,
        workers=args.workers,
    ) as decoder:
        texts = decoder.decode_batch(logits)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{i}\t{t}\n" for i, t in zip(ids, texts, strict=True)))
    print(f"decoded {len(ids)} utterances -> {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.step == "decode":
        try:
            return _run_decode(args)
        except LMError as e:
            print(f"jasper lm decode: error: {e}", file=sys.stderr)
            return 2
    if args.step == "build":
        errors: tuple[type[Exception], ...] = (LMError,)
    else:
        from jasper.data import ManifestError

        errors = (LMError, ManifestError)
    try:
        return _run_build(args) if args.step == "build" else _run_tune(args)
    except errors as e:
        print(f"jasper lm {args.step}: error: {e}", file=sys.stderr)
        return 2
