"""Subtitles, speech-activity segmentation and word confidence, measured as a user meets them.

    .venv/bin/python benchmarks/transcripts.py [--ckpt quickstart-output/train/Jasper_best_checkpoint.pt]
        [--dev DIR/synth-dev.json] [--skip_speed]

1. Subtitles. The 36 real clips of ../shared joined with 2-5 s of silence (seeded) into one long
   file, transcribed with the checkpoint; its SRT and VTT parsed with the PyPI `srt` and
   `webvtt-py`; cues in order, not overlapping, inside the audio, none longer than --max_cue_seconds;
   the share of cues that fall inside one clip's span (0.5 s slack).
2. Speech activity. A 10-minute file, half of it silence (the clips tiled, each followed by as much
   silence as it lasts): jasper10x5dr with random weights transcribes it with `--vad none` and
   `--vad silero` (VAD time included), one after the other; and the checkpoint's CER on the clips in
   that file with each.
3. Confidence. The checkpoint, greedy, on the synthetic dev split: each hypothesis word is right or
   wrong by jiwer's alignment with the reference; the ROC AUC of word confidence for telling them apart.
4. Hotwords. On the synthetic test split, 30 words chosen with a fixed seed among the test
   references' words of 4+ letters that the training transcripts hold at most once; beam search
   (64 beams) without and with them as hotwords (weight --hotword_weight), without the LM and with
   the quickstart's LM (--lm, when given): recall of the hotwords' occurrences, and the WER over the
   other reference words (their substitutions and deletions plus all insertions, over their count).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np
import srt
import torch
import webvtt

from jasper import audio, config
from jasper.data import load_utterances
from jasper.inference.pipeline import load
from jasper.model import Jasper
from jasper.text import Tokenizer, normalize

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "librispeech-real-mini"
RATE = 16000


def real_clips() -> list[tuple[np.ndarray, str]]:
    out = []
    for trans in sorted(SHARED.rglob("*.trans.txt")):
        for line in trans.read_text().splitlines():
            uid, _, text = line.partition(" ")
            flac = trans.with_name(f"{uid}.flac")
            if flac.is_file():
                out.append((audio.load(flac), normalize(text, " abcdefghijklmnopqrstuvwxyz'")))
    return out


def join(
    clips: list[np.ndarray], gaps: list[float], lead: float
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    parts, spans, t = [np.zeros(int(lead * RATE), np.float32)], [], lead
    for clip, gap in zip(clips, gaps, strict=True):
        parts += [clip, np.zeros(int(gap * RATE), np.float32)]
        spans.append((t, t + len(clip) / RATE))
        t += len(clip) / RATE + gap
    signal = np.concatenate(parts)
    return signal + np.random.default_rng(0).normal(0, 3e-4, len(signal)).astype(np.float32), spans


def subtitles_part(pipe, clips, tmp: Path, max_cue: float) -> dict:  # noqa: ANN001
    rng = np.random.default_rng(1)
    signal, spans = join([c for c, _ in clips], list(rng.uniform(2, 5, len(clips))), 1.0)
    path = tmp / "joined.wav"
    audio.write(path, signal, RATE)
    [result] = pipe.transcribe([path])
    subs = list(srt.parse(result.to_srt(max_cue_seconds=max_cue)))
    vtt = list(webvtt.from_buffer(io.StringIO(result.to_vtt(max_cue_seconds=max_cue))))
    times = [(s.start.total_seconds(), s.end.total_seconds()) for s in subs]
    inside = sum(any(a - 0.5 <= s and e <= b + 0.5 for a, b in spans) for s, e in times)
    return {
        "seconds": round(len(signal) / RATE, 1),
        "cues": len(subs),
        "vtt_cues": len(vtt),
        "in_order_and_disjoint": all(e1 <= s2 for (_, e1), (s2, _) in zip(times, times[1:], strict=False)),
        "within_audio": all(0 <= s <= e <= len(signal) / RATE for s, e in times),
        "longest_cue_s": round(max(e - s for s, e in times), 2),
        "share_inside_one_clip": round(inside / len(subs), 4),
    }


def half_silence(clips, minutes: float = 10.0) -> tuple[np.ndarray, str]:  # noqa: ANN001
    chosen, texts, total = [], [], 0.0
    while total < minutes * 60:
        for clip, text in clips:
            if total >= minutes * 60:
                break
            chosen.append(clip)
            texts.append(text)
            total += 2 * len(clip) / RATE
    signal, _ = join(chosen, [len(c) / RATE for c in chosen], 0.0)
    return signal, " ".join(texts)


def vad_part(pipe, clips, tmp: Path, skip_speed: bool) -> dict:  # noqa: ANN001
    signal, reference = half_silence(clips)
    path = tmp / "half_silence.wav"
    audio.write(path, signal, RATE)
    out: dict = {"seconds": round(len(signal) / RATE, 1)}
    for method in ("none", "silero"):
        [result] = pipe.transcribe([path], vad=method)
        out[f"cer_{method}"] = round(100 * jiwer.cer(reference, result.text), 2)
    if skip_speed:
        return out
    cfg = config.load(REPO / "configs" / "jasper10x5dr_speedp-online_speca.yaml")
    torch.manual_seed(0)
    ckpt = tmp / "jasper10x5dr_random.pt"
    torch.save({"state_dict": Jasper.from_config(cfg).state_dict(), "config": cfg}, ckpt)
    big = load(str(ckpt))
    for method in ("none", "silero"):
        started = time.perf_counter()
        big.transcribe([path], vad=method)
        out[f"jasper10x5dr_seconds_{method}"] = round(time.perf_counter() - started, 1)
    out["speed_up"] = round(out["jasper10x5dr_seconds_none"] / out["jasper10x5dr_seconds_silero"], 2)
    return out


def roc_auc(right: list[float], wrong: list[float]) -> float:
    """P(a right word's confidence > a wrong word's), ties counting half (Mann-Whitney)."""
    scores = np.array(right + wrong)
    ranks = np.empty(len(scores))
    order = scores.argsort(kind="mergesort")
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    r = ranks[: len(right)].sum()
    return float((r - len(right) * (len(right) + 1) / 2) / (len(right) * len(wrong)))


def confidence_part(pipe, dev: Path) -> dict:  # noqa: ANN001
    ds = config.fill({"min_duration": 0.0}, config.AUDIO_DATASET)
    utts, _ = load_utterances([dev], dev.parent, Tokenizer(pipe.tokenizer.labels), ds)
    right, wrong = [], []
    for utt, result in zip(utts, pipe.transcribe([u.paths[0] for u in utts]), strict=True):
        if not result.words:
            continue
        hyp = [w.word for w in result.words]
        alignment = jiwer.process_words(utt.text or "-", " ".join(hyp)).alignments[0]
        correct = np.zeros(len(hyp), bool)
        for chunk in alignment:
            if chunk.type == "equal":
                correct[chunk.hyp_start_idx : chunk.hyp_end_idx] = True
        for w, ok in zip(result.words, correct, strict=True):
            (right if ok else wrong).append(w.confidence)
    return {
        "words": len(right) + len(wrong),
        "right": len(right),
        "wrong": len(wrong),
        "roc_auc": round(roc_auc(right, wrong), 4),
        "median_confidence_right": round(statistics.median(right), 3),
        "median_confidence_wrong": round(statistics.median(wrong), 3),
    }


def choose_hotwords(test: list[str], train: list[str], count: int = 30, seed: int = 0) -> list[str]:
    in_train: dict[str, int] = {}
    for text in train:
        for w in text.split():
            in_train[w] = in_train.get(w, 0) + 1
    candidates = sorted({w for text in test for w in text.split() if len(w) >= 4 and in_train.get(w, 0) <= 1})
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(candidates, size=min(count, len(candidates)), replace=False).tolist())


def hotword_scores(refs: list[str], hyps: list[str], hot: set[str]) -> tuple[float, float]:
    """(recall of hot reference words, WER over the other reference words)."""
    found = hot_total = other_errors = other_total = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        words = ref.split()
        matched = np.zeros(len(words), bool)
        out = jiwer.process_words(ref, hyp or "-")
        for chunk in out.alignments[0]:
            if chunk.type == "equal":
                matched[chunk.ref_start_idx : chunk.ref_end_idx] = True
            if chunk.type == "insert":
                other_errors += chunk.hyp_end_idx - chunk.hyp_start_idx
        for w, ok in zip(words, matched, strict=True):
            if w in hot:
                hot_total += 1
                found += ok
            else:
                other_total += 1
                other_errors += not ok
    return 100 * found / max(hot_total, 1), 100 * other_errors / max(other_total, 1)


def hotwords_part(pipe, test: Path, train: Path, lm: str | None, weight: float) -> dict:  # noqa: ANN001
    from jasper.inference.pipeline import log_probs
    from jasper.lm.beam import BeamSearchDecoder

    ds = config.fill({"min_duration": 0.0}, config.AUDIO_DATASET)
    tok = Tokenizer(pipe.tokenizer.labels)
    test_utts, _ = load_utterances([test], test.parent, tok, ds)
    train_utts, _ = load_utterances([train], train.parent, tok, ds, check_files=False)
    hot = choose_hotwords([u.text for u in test_utts], [u.text for u in train_utts])
    lps = [
        log_probs(audio.load(u.paths[0]), pipe.model, pipe.features, pad_leading=pipe.pad_leading)
        .float()
        .numpy()
        for u in test_utts
    ]
    refs = [u.text for u in test_utts]
    out: dict = {"hotwords": hot, "occurrences": sum(r.split().count(w) for r in refs for w in hot)}
    for name, lm_dir in (("no_lm", None), ("lm", lm)):
        if name == "lm" and not lm:
            continue
        for boosted in (False, True):
            with BeamSearchDecoder(
                pipe.tokenizer.labels, lm_dir, hotwords=hot if boosted else (), hotword_weight=weight
            ) as beam:
                hyps = beam.decode_batch(lps)
            recall, other_wer = hotword_scores(refs, hyps, set(hot))
            key = f"{name}_{'hotwords' if boosted else 'plain'}"
            out[key] = {"hot_recall": round(recall, 2), "other_wer": round(other_wer, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ckpt", default=str(REPO / "quickstart-output" / "train" / "Jasper_best_checkpoint.pt")
    )
    parser.add_argument("--dev", type=Path, default=REPO / "data" / "quickstart" / "synth" / "synth-dev.json")
    parser.add_argument("--max_cue_seconds", type=float, default=6.0)
    parser.add_argument(
        "--test", type=Path, default=REPO / "data" / "quickstart" / "synth" / "synth-test.json"
    )
    parser.add_argument(
        "--lm", default=None, help="the quickstart's LM directory, for the hotword rows with an LM"
    )
    parser.add_argument("--hotword_weight", type=float, default=10.0)
    parser.add_argument(
        "--only", choices=("subtitles", "confidence", "vad", "hotwords"), nargs="*", default=None
    )
    parser.add_argument("--skip_speed", action="store_true", help="leave out the jasper10x5dr timing")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pipe = load(args.ckpt)
    clips = real_clips()
    figures = {"machine": platform.processor() or platform.machine(), "clips": len(clips)}
    parts = {
        "subtitles": lambda tmp: subtitles_part(pipe, clips, tmp, args.max_cue_seconds),
        "confidence": lambda tmp: confidence_part(pipe, args.dev),
        "hotwords": lambda tmp: hotwords_part(
            pipe, args.test, args.test.with_name("synth-train.json"), args.lm, args.hotword_weight
        ),
        "vad": lambda tmp: vad_part(pipe, clips, tmp, args.skip_speed),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, part in parts.items():
            if args.only is None or name in args.only:
                figures[name] = part(Path(tmp))
                print(json.dumps({name: figures[name]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
