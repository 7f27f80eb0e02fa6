"""Decoding speed: greedy, and beam search at widths 1, 16 and 64 with and without a word LM.

Prints utterances and audio seconds decoded per second (50 output frames per audio second, the
Jasper models' 20 ms stride), and the WER of each decoding. Without `--logits`, the log-probs are
synthetic: sentences of `--sentences` (held-out text) spelled out as CTC frames by a noisy "acoustic
model" that confuses a share of the characters with others, so that the LM has errors to fix. With
`--logits` (from `jasper infer --save_logits`) and `--references`, real model output is timed.
Without `--lm`, an LM is built from `--lm_text` first (KenLM tools from scripts/setup_kenlm.sh).

    python benchmarks/decoding_speed.py [--utterances 100] [--workers 2] [--lm DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from jasper.decoding import collapse
from jasper.lm.beam import BeamSearchDecoder
from jasper.lm.tool import ENGLISH_LABELS, build_lm, load_logits, load_references
from jasper.metrics import wer

FRAMES_PER_SECOND = 50
TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "text"
LABELS = ENGLISH_LABELS
BLANK = len(LABELS)


def synthetic_log_probs(sentence: str, rng: np.random.Generator, confusion: float) -> np.ndarray:
    """CTC log-probs `[T, 29]` spelling `sentence`: 1-2 frames per character, 1-2 blank frames after
    each, and a share `confusion` of characters whose frames favour another letter (the true one
    second), the kind of error an LM can undo."""
    rows = []
    for ch in sentence:
        true = LABELS.index(ch)
        wrong = (
            rng.choice([i for i in range(1, 27) if i != true])
            if ch != " " and rng.random() < confusion
            else None
        )
        for _ in range(rng.integers(1, 3)):
            row = rng.standard_normal(BLANK + 1)
            row[true] += 6.0
            if wrong is not None:
                row[wrong] += 6.0 + rng.uniform(0.2, 1.5)
            rows.append(row)
        for _ in range(rng.integers(1, 3)):
            row = rng.standard_normal(BLANK + 1)
            row[BLANK] += 6.0
            rows.append(row)
    logits = np.array(rows, dtype=np.float32)
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def greedy(log_probs: np.ndarray) -> str:
    return " ".join("".join(LABELS[i] for i in collapse(log_probs.argmax(1).tolist(), BLANK)).split())


def timed(fn) -> tuple[list[str], float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--logits", help="saved log-probs (jasper infer --save_logits); default: synthetic")
    p.add_argument("--references", help="`<id><TAB><text>` references for --logits (for the WER)")
    p.add_argument(
        "--sentences", default=str(TEXT / "sentences-extra.txt"), help="text of the synthetic utterances"
    )
    p.add_argument("--lm", help="LM directory or file; default: build one from --lm_text")
    p.add_argument("--lm_text", default=str(TEXT / "sentences-public.txt"), help="text for the default LM")
    p.add_argument("--order", type=int, default=4, help="order of the default LM (default 4)")
    p.add_argument("--utterances", type=int, default=100, help="synthetic utterances (default 100)")
    p.add_argument(
        "--confusion", type=float, default=0.15, help="share of confused characters (default 0.15)"
    )
    p.add_argument("--beam_widths", type=int, nargs="+", default=[1, 16, 64], help="default 1 16 64")
    p.add_argument("--alpha", type=float, help="LM weight (default: the LM's tuned one, else 0.5)")
    p.add_argument("--beta", type=float, help="word bonus (default: the LM's tuned one, else 1.5)")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (default: all CPUs)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    if args.logits:
        ids, arrays = load_logits(args.logits)
        refs = load_references(references=args.references) if args.references else {}
        references = [refs.get(i, "") for i in ids] if refs else None
    else:
        rng = np.random.default_rng(args.seed)
        lines = Path(args.sentences).read_text().splitlines()
        references = [lines[i] for i in rng.choice(len(lines), args.utterances, replace=False)]
        arrays = [synthetic_log_probs(s, rng, args.confusion) for s in references]
    audio_seconds = sum(len(a) for a in arrays) / FRAMES_PER_SECOND

    with tempfile.TemporaryDirectory() as tmp:
        lm = args.lm
        if lm is None:
            lm = Path(tmp) / "lm"
            (info, build_s) = timed(lambda: build_lm([args.lm_text], lm, args.order))
            print(
                f"built an order-{args.order} LM from {info.words} words of {args.lm_text} in {build_s:.1f} s"
            )
        print(
            f"{len(arrays)} utterances, {audio_seconds:.0f} s of audio ({FRAMES_PER_SECOND} frames/s), "
            f"{args.workers} worker(s), {os.cpu_count()} CPU(s)"
        )
        header = f"{'decoder':<8} {'beam':>4} {'LM':>3} {'utt/s':>9} {'audio s/s':>10} {'WER %':>7}"
        print(header)
        print("-" * len(header))

        def row(name: str, beam: str, with_lm: str, texts: list[str], seconds: float) -> None:
            score = f"{100 * wer(texts, references):7.2f}" if references else f"{'-':>7}"
            print(
                f"{name:<8} {beam:>4} {with_lm:>3} {len(arrays) / seconds:9.1f} "
                f"{audio_seconds / seconds:10.0f} {score}",
                flush=True,
            )

        texts, seconds = timed(lambda: [greedy(a) for a in arrays])
        row("greedy", "-", "no", texts, seconds)
        for beam in args.beam_widths:
            for model in (None, lm):
                weights = {"alpha": args.alpha, "beta": args.beta}
                with BeamSearchDecoder(
                    LABELS, model, beam_width=beam, workers=args.workers, **weights
                ) as decoder:
                    decoder.decode_batch(arrays[:2])  # start the workers outside the timing
                    texts, seconds = timed(lambda d=decoder: d.decode_batch(arrays))
                row("beam", str(beam), "yes" if model else "no", texts, seconds)


if __name__ == "__main__":
    main()
