"""Render an offline synthetic speech corpus with TTS voices, in LibriSpeech's layout.

Why: training and WER need real speech, and LibriSpeech is 60 GB behind a download. Sentences
read aloud by offline TTS voices give a corpus that any machine can build in minutes, so the whole
pipeline (prepare, train, evaluate) runs end to end on real audio without LibriSpeech.

Voices: the catalogue and engines of `jasper.datasets.voices` (espeak-ng, flite, festival, piper and
Kokoro-82M's voice packs and blends: 350 speakers, 40 of them held out for test). Voices that are
not installed or fail a probe are dropped and named in the summary.

Splits: the sentences are normalised (per `--language`, datasets/languages.py), de-duplicated,
shuffled with the seed, cut 90/5/5 into train, dev and test (no sentence in two splits). train and
dev are read by the training voices; test only by held-out voices (flite rms, festival ked_diphone, two
espeak accent+variant pairs, ten Kokoro packs and twenty blends of only those packs), none of whose
speakers is heard in training. piper has a single voice, which trains. Engines are weighted per
family (ENGINE_WEIGHTS): an engine's weight is shared by its voices, so Kokoro's 310 training
speakers together read as much as flite's three.

Per utterance, everything is drawn from a generator seeded with (--seed, sentence index), so an
utterance renders to the same bytes on every run (given the same engine versions): the voice, the
tempo (0.9-1.1 via the engine's rate option), the pitch (+-2 semitones where the engine has a
pitch control: espeak, flite, the festival diphones), the peak level (-6 to -1 dBFS), 0.1-0.5 s of
leading and trailing silence and a Gaussian noise floor (-75 to -60 dBFS) over the whole clip.
The engine's own exact-zero padding is cut first: digital silence is not what a microphone
records, and long runs of exact zeros stall training.

Output under --out, 16 kHz mono 16-bit FLAC:
  <split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac and <speaker>-<chapter>.trans.txt
  (upper-case transcripts); chapters hold 50 utterances and are numbered 1000+ in train, 2000+ in
  dev, 3000+ in test, so utterance ids are unique across splits.
  synth-<split>.json: the reference's manifest format (fname relative to --out).
  voices.json: seed, sentence checksum, and per speaker id the engine, voice, split role ("train":
  read in train and dev, "test": held out) and utterances and seconds per split. The speaker id is
  the second component of every fname, so WER per engine or per voice is a lookup, and the
  manifests stay exactly the reference's format.

--hours is the total across splits (90/5/5 again); each split renders its sentences in order
until its share is reached. --train_readings N makes the training share N times as large and lets
it read each training sentence up to N times, each time by a training voice that has not read that
sentence yet (while there is one). Every sentence is read once before any is read again: while the
sentence pool is larger than the single-reading share, the extra share first brings new sentences;
with --hours 0 every training sentence is read N times. Dev and test stay as they are, and the
first pass is the single-reading plan itself, so a cached corpus is extended, not re-rendered.

A re-run with the same settings skips finished files (resume after Ctrl-C) and rewrites the
transcripts and manifests; files beyond the requested size are removed.
An engine failure on one sentence is counted and reported, not fatal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jasper import audio
from jasper.data import flac_info, write_manifest
from jasper.datasets.languages import LANGUAGES, load_sentences
from jasper.datasets.voices import RENDERERS, SETUP_HINT, Voice, engine_missing, probe
from jasper.faults import Skipped

SAMPLE_RATE = audio.SAMPLE_RATE
SPLITS = ("train", "dev", "test")
SPLIT_FRACTIONS = {"train": 0.90, "dev": 0.05, "test": 0.05}
CHAPTER_SIZE = 50
CHAPTER_BASE = {"train": 1000, "dev": 2000, "test": 3000}
ENGINES = ("espeak", "flite", "festival", "piper", "kokoro")
# Piper has one voice, so more of it adds no speaker variety (and it renders slowest): 3.0 -> 1.0 left
# unseen-voice error rates as they were and made room for more hours (docs/experiments.md).
# Kokoro renders 1.4 audio-s per worker-s against espeak's 181 (docs/benchmarks.md): its weight sets the time.
ENGINE_WEIGHTS = {"piper": 1.0, "flite": 2.0, "festival": 2.0, "espeak": 1.0, "kokoro": 2.0}
# Engines whose voices share one model: one probe renders, the other voices only need their data.
SHARED_MODEL = frozenset({"kokoro"})

SPEED_RANGE = (0.9, 1.1)  # tempo factor, > 1 is faster
SEMITONE_RANGE = (-2.0, 2.0)  # pitch shift, where the engine has a pitch control
PEAK_DB_RANGE = (-6.0, -1.0)  # peak level in dBFS
SILENCE_RANGE_S = (0.1, 0.5)  # leading and trailing silence, each
NOISE_DB_RANGE = (-75.0, -60.0)  # RMS of the noise floor in dBFS
PAD_TRIM_DB = -50.0  # engine padding quieter than this (relative to the peak) is cut...
PAD_KEEP_S = 0.02  # ...except for this much around the speech
BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} audio-s "
    "[{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)
BAR_UNLIMITED = "{desc}: {n:.0f} audio-s [{elapsed}, {rate_fmt}{postfix}]"


class SynthError(RuntimeError):
    """A problem that stops the whole run (no engine, no sentences, a mismatched cache)."""


@dataclass(frozen=True)
class Utterance:
    """One planned recording: the sentence, the voice and every random choice for it."""

    split: str
    index: int  # of the sentence in the de-duplicated input
    text: str
    voice: Voice
    chapter: int
    number: int
    speed: float
    semitones: float
    peak_db: float
    lead_s: float
    trail_s: float
    noise_db: float
    seed: int  # noise floor and piper's sampling noise

    @property
    def uid(self) -> str:
        return f"{self.voice.speaker}-{self.chapter}-{self.number:04d}"

    @property
    def fname(self) -> str:
        """Path of the FLAC relative to the corpus root."""
        return f"{self.split}/{self.voice.speaker}/{self.chapter}/{self.uid}.flac"


@dataclass(frozen=True)
class Rendered:
    """What a worker reports for one utterance: the manifest file info, or an error message."""

    utt: Utterance
    info: dict | None = None
    error: str | None = None
    cached: bool = False
    seconds: float = 0.0  # the worker's time to render it (0 when cached)


@dataclass(frozen=True)
class SynthOptions:
    """Settings of `jasper data synth`; the CLI flags have the same names and defaults."""

    out: Path
    text: tuple[Path, ...] = ()  # empty: the language's default text
    hours: float = 1.0  # total across splits; 0: every sentence
    max_sentences: int = 0  # 0: no limit
    train_readings: int = 1  # training share x N; each sentence read up to N times
    engines: tuple[str, ...] = ENGINES
    seed: int = 1
    workers: int = os.cpu_count() or 1
    language: str = "en"  # a key of languages.LANGUAGES


@dataclass
class Summary:
    """The outcome of a run, for the printed report."""

    kept: dict[str, list[Rendered]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    failures: list[Rendered] = field(default_factory=list)
    voices: list[Voice] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    rendered_s: float = 0.0  # audio seconds rendered in this run (not cached)
    wall_s: float = 0.0
    exhausted: list[str] = field(default_factory=list)  # splits that ran out of sentences


# ----------------------------------------------------------------------------------------------
# Planning: pure functions of the sentences, the voices and the seed.


def split_sentences(count: int, seed: int) -> dict[str, list[int]]:
    """Disjoint sentence indices per split: a seeded shuffle cut by SPLIT_FRACTIONS.

    dev and test get at least one sentence each when there are three or more.
    """
    order = np.random.default_rng(seed).permutation(count).tolist()
    sizes = {s: round(count * SPLIT_FRACTIONS[s]) for s in ("dev", "test")}
    if count >= 3:
        sizes = {s: max(1, n) for s, n in sizes.items()}
    n_train = count - sizes["dev"] - sizes["test"]
    return {
        "train": order[:n_train],
        "dev": order[n_train : n_train + sizes["dev"]],
        "test": order[n_train + sizes["dev"] :],
    }


def voice_pools(voices: Sequence[Voice]) -> dict[str, list[Voice]]:
    """Voices per split: train and dev share the training voices, test has the held-out ones."""
    training = [v for v in voices if not v.held_out]
    return {"train": training, "dev": training, "test": [v for v in voices if v.held_out]}


def voice_weights(pool: Sequence[Voice]) -> np.ndarray:
    """Selection probabilities: each engine family's weight shared equally by its voices."""
    per_family = Counter(v.engine for v in pool)
    weights = np.array([ENGINE_WEIGHTS[v.engine] / per_family[v.engine] for v in pool])
    return weights / weights.sum()


def plan_split(
    split: str,
    indices: Sequence[int],
    sentences: Sequence[str],
    pool: Sequence[Voice],
    seed: int,
    readings: int = 1,
) -> list[Utterance]:
    """Utterances of one split, in rendering order. Empty when the split has no voices.

    With `readings` > 1 every sentence is read again by other voices (while the pool has voices it
    has not used for that sentence), one full pass over the sentences after the other. The first
    pass draws exactly what a single reading draws, so a larger corpus extends a smaller one.
    """
    if readings < 1:
        raise ValueError(f"readings must be >= 1, got {readings}")
    if not pool:
        return []
    probabilities = voice_weights(pool)
    drawn: list[list[tuple[Voice, np.random.Generator]]] = [[] for _ in range(readings)]
    for index in indices:
        used = np.zeros(len(pool), dtype=bool)
        for reading in range(readings):
            # the first reading keeps the single-reading seed and weights, bit for bit (cached corpora)
            rng = np.random.default_rng([seed, index] if reading == 0 else [seed, index, reading])
            p = probabilities
            if 0 < used.sum() < len(pool):  # renormalising even an unchanged p could move a draw
                p = np.where(used, 0.0, p) / p[~used].sum()
            choice = int(rng.choice(len(pool), p=p))
            used[choice] = True
            drawn[reading].append((pool[choice], rng))
    counts: Counter[int] = Counter()
    plan = []
    for reading_pass in drawn:
        for index, (voice, rng) in zip(indices, reading_pass, strict=True):
            k = counts[voice.speaker]
            counts[voice.speaker] += 1
            plan.append(
                Utterance(
                    split=split,
                    index=index,
                    text=sentences[index],
                    voice=voice,
                    chapter=CHAPTER_BASE[split] + k // CHAPTER_SIZE,
                    number=k % CHAPTER_SIZE,
                    speed=float(rng.uniform(*SPEED_RANGE)),
                    semitones=float(rng.uniform(*SEMITONE_RANGE)),
                    peak_db=float(rng.uniform(*PEAK_DB_RANGE)),
                    lead_s=float(rng.uniform(*SILENCE_RANGE_S)),
                    trail_s=float(rng.uniform(*SILENCE_RANGE_S)),
                    noise_db=float(rng.uniform(*NOISE_DB_RANGE)),
                    seed=int(rng.integers(2**31)),
                )
            )
    return plan


def split_readings(split: str, train_readings: int) -> int:
    """How often a split's sentences may be read: dev and test once, so they never change."""
    return train_readings if split == "train" else 1


def plan_corpus(
    sentences: Sequence[str], voices: Sequence[Voice], seed: int, train_readings: int = 1
) -> dict[str, list[Utterance]]:
    """Every split's full plan; a run renders a prefix of each. Only train is read more than once."""
    splits = split_sentences(len(sentences), seed)
    pools = voice_pools(voices)
    return {
        s: plan_split(s, splits[s], sentences, pools[s], seed, split_readings(s, train_readings))
        for s in SPLITS
    }


# ----------------------------------------------------------------------------------------------
# One utterance: engine speech -> trimmed, levelled, padded, noisy 16 kHz FLAC.


def trim_padding(speech: np.ndarray) -> np.ndarray:
    """Cut the engine's silent padding: samples PAD_TRIM_DB below the peak, keeping PAD_KEEP_S."""
    magnitude = np.abs(speech)
    peak = float(magnitude.max(initial=0.0))
    if peak == 0.0:
        raise audio.AudioError("the engine produced silence")
    loud = np.flatnonzero(magnitude > peak * 10 ** (PAD_TRIM_DB / 20))
    keep = int(PAD_KEEP_S * SAMPLE_RATE)
    return speech[max(0, loud[0] - keep) : loud[-1] + 1 + keep]


def finish(speech: np.ndarray, utt: Utterance) -> np.ndarray:
    """Level the speech to its peak, pad it with silence and add the noise floor."""
    speech = trim_padding(speech)
    speech = speech * (10 ** (utt.peak_db / 20) / np.abs(speech).max())
    lead, trail = round(utt.lead_s * SAMPLE_RATE), round(utt.trail_s * SAMPLE_RATE)
    clip = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    noise = np.random.default_rng(utt.seed).normal(0.0, 10 ** (utt.noise_db / 20), clip.size)
    return (clip + noise).astype(np.float32)


def render(utt: Utterance, root: Path) -> Rendered:
    """Render `utt` under `root` unless its FLAC is already there. Errors come back as values."""
    path = root / utt.fname
    start = time.perf_counter()
    try:
        cached = path.is_file()
        if not cached:
            with tempfile.TemporaryDirectory(prefix="jasper-synth-") as tmp:
                speech = RENDERERS[utt.voice.engine](
                    utt.voice, utt.text, utt.speed, utt.semitones, utt.seed, Path(tmp)
                )
            partial = path.with_name(f"{utt.uid}.partial.flac")
            audio.write(partial, finish(speech, utt))
            partial.replace(path)
        seconds = 0.0 if cached else time.perf_counter() - start
        return Rendered(utt, info=flac_info(path), cached=cached, seconds=seconds)
    except Exception as e:  # one bad sentence must not stop the corpus; it is counted and reported
        return Rendered(utt, error=f"{type(e).__name__}: {e}")


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the main process, which stops handing out work."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ----------------------------------------------------------------------------------------------
# The run: pick voices, plan, render in order up to the size asked for, write the corpus files.


def available_voices(
    engines: Sequence[str], pool: ProcessPoolExecutor, catalogue: Sequence[Voice]
) -> tuple[list[Voice], list[str]]:
    """The catalogue voices of `engines` that render here, and a line per dropped voice or engine.

    Every voice is probed, except in engines whose voices share one model (SHARED_MODEL): there the
    first voice's probe stands for all of them (their data was checked by `engine_missing`).
    """
    dropped, candidates, stands_for = [], [], {}
    for engine in engines:
        reason = engine_missing(engine)
        if reason:
            dropped.append(f"{engine}: {reason}")
            continue
        mine = [v for v in catalogue if v.engine == engine]
        if engine in SHARED_MODEL:
            stands_for[mine[0]] = mine
            mine = mine[:1]
        candidates += mine
    voices = []
    for voice, error in zip(candidates, pool.map(probe, candidates), strict=True):
        if error:
            dropped.append(f"{voice.engine if voice in stands_for else voice.label}: {error}")
        else:
            voices += stands_for.get(voice, [voice])
    return voices, dropped


def budgets(opts: SynthOptions) -> dict[str, tuple[float, int]]:
    """Per split: the audio seconds to reach (inf: no limit) and the most sentences to use."""
    out = {}
    for split in SPLITS:
        readings = split_readings(split, opts.train_readings)
        seconds = opts.hours * 3600 * SPLIT_FRACTIONS[split] * readings if opts.hours > 0 else float("inf")
        limit = (
            max(1, round(opts.max_sentences * SPLIT_FRACTIONS[split])) if opts.max_sentences else sys.maxsize
        )
        out[split] = (seconds, limit)
    return out


def render_in_order(
    plans: dict[str, list[Utterance]],
    opts: SynthOptions,
    pool: ProcessPoolExecutor,
    summary: Summary,
    skipped: Skipped,
) -> None:
    """Render each split's plan in order until its budget is reached, `workers` at a time.

    Results are consumed in plan order, so where a split stops depends only on the audio, not on
    the timing of the workers: the corpus is the same for any --workers. An utterance the engine
    fails on goes to `skipped` (reported at once; with `strict` it stops the run).
    """
    limits = budgets(opts)
    total = sum(limits[s][0] for s in SPLITS if plans[s])
    seconds = dict.fromkeys(SPLITS, 0.0)
    full = dict.fromkeys(SPLITS, False)
    # the sentence limit picks sentences; every reading of them is rendered
    allowed = {s: {u.index for u in plans[s][: limits[s][1]]} for s in SPLITS}
    jobs: Iterator[Utterance] = (u for s in SPLITS for u in plans[s] if u.index in allowed[s])
    pending: deque[Future[Rendered]] = deque()
    window = 2 * max(1, opts.workers)  # enough to keep the workers busy; more is wasted at each cut
    if total == float("inf"):
        bar = tqdm(total=None, desc="synth", unit="audio-s", bar_format=BAR_UNLIMITED, dynamic_ncols=True)
    else:
        bar = tqdm(total=total, desc="synth", unit="audio-s", bar_format=BAR_FORMAT, dynamic_ncols=True)
    with bar:
        while True:
            while len(pending) < window:
                utt = next(jobs, None)
                if utt is None:
                    break
                if not full[utt.split]:
                    pending.append(pool.submit(render, utt, opts.out))
            if not pending:
                break
            result = pending.popleft().result()
            split = result.utt.split
            if full[split]:
                continue  # rendered ahead of the cut; pruned afterwards
            if result.info is None:
                skipped.add(f"{result.utt.fname} ({result.utt.voice.label})", result.error or "failed")
                summary.failures.append(result)
                bar.set_postfix(failed=len(summary.failures))
                continue
            duration = result.info["duration"]
            summary.kept[split].append(result)
            if not result.cached:
                summary.rendered_s += duration
            budget = limits[split][0]
            if bar.total is None:
                bar.update(duration)
            else:  # up to the split's budget, and never past the total (float sums can exceed it by an ulp)
                bar.update(min(duration, budget - seconds[split], bar.total - bar.n))
            seconds[split] += duration
            full[split] = seconds[split] >= budget
    summary.exhausted = [s for s in SPLITS if plans[s] and not full[s] and opts.hours > 0]


def manifest_entry(result: Rendered) -> dict:
    """The reference's manifest object for one rendered utterance."""
    info = result.info
    assert info is not None, "failed utterances have no manifest entry"
    return {
        "transcript": result.utt.text,
        "files": [{**info, "fname": result.utt.fname, "speed": 1}],
        "original_duration": info["duration"],
        "original_num_samples": info["num_samples"],
    }


def write_split(root: Path, split: str, results: list[Rendered]) -> None:
    """Transcripts and manifest of a split; FLACs and transcripts not in it are removed."""
    results = sorted(results, key=lambda r: r.utt.uid)
    chapters: dict[Path, list[str]] = {}
    for r in results:
        trans = root / r.utt.split / str(r.utt.voice.speaker) / str(r.utt.chapter)
        trans = trans / f"{r.utt.voice.speaker}-{r.utt.chapter}.trans.txt"
        chapters.setdefault(trans, []).append(f"{r.utt.uid} {r.utt.text.upper()}")
    for path, lines in chapters.items():
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    keep = {root / r.utt.fname for r in results} | set(chapters)
    split_dir = root / split
    if split_dir.is_dir():
        for path in [*split_dir.rglob("*.flac"), *split_dir.rglob("*.trans.txt")]:
            if path not in keep:
                path.unlink()
        for directory in sorted(split_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
    write_manifest([manifest_entry(r) for r in results], root / f"synth-{split}.json")


def voices_record(
    voices: Sequence[Voice],
    seed: int,
    text_sha256: str,
    kept: dict[str, list[Rendered]] | None = None,
    language: str = "en",
) -> dict:
    """The content of voices.json: the settings that decide the audio, and the voices."""
    record: dict = {"seed": seed, "sentences_sha256": text_sha256, "voices": {}}
    if language != "en":  # English corpora from before languages keep their voices.json
        record["language"] = language
    for voice in voices:
        entry: dict = {
            "engine": voice.engine,
            "voice": voice.name,
            "split": "test" if voice.held_out else "train",
        }
        if kept is not None:
            mine = {s: [r for r in kept[s] if r.utt.voice == voice] for s in SPLITS}
            entry["utterances"] = {s: len(rs) for s, rs in mine.items() if rs}
            entry["seconds"] = {
                s: round(sum(r.info["duration"] for r in rs), 2) for s, rs in mine.items() if rs
            }
        record["voices"][str(voice.speaker)] = entry
    return record


def check_cache(root: Path, record: dict) -> None:
    """Refuse to mix corpora: files under `root` must come from the same seed, text and voices."""
    path = root / "voices.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    same = (
        old.get("seed") == record["seed"]
        and old.get("sentences_sha256") == record["sentences_sha256"]
        and set(old.get("voices", {})) == set(record["voices"])
        and old.get("language") == record.get("language")
    )
    if not same:
        raise SynthError(
            f"{root} holds a corpus rendered with other settings (seed, sentences or voices); "
            "use another --out or delete it"
        )


def synthesize_corpus(opts: SynthOptions, skipped: Skipped | None = None) -> Summary:
    """Render the corpus described by `opts` under `opts.out` and write its manifests.

    Utterances that fail to render are left out and given to `skipped` (default: reported on
    stderr); a strict `skipped` stops at the first, before any manifest is written.
    """
    skipped = skipped or Skipped("data synth")
    language = LANGUAGES[opts.language]
    text_paths = opts.text or (language.text,)
    for path in text_paths:
        if not Path(path).exists():
            raise SynthError(f"{path}: no such sentence file (give --text FILE; {language.install})")
    sentences = load_sentences(text_paths, language)
    if not sentences:
        raise SynthError(f"no sentences in {', '.join(map(str, text_paths))}")
    text_sha256 = hashlib.sha256("\n".join(sentences).encode()).hexdigest()
    summary = Summary()
    start = time.perf_counter()
    # Engines (onnxruntime, festival processes) start only in the workers, so forking is safe.
    with ProcessPoolExecutor(max(1, opts.workers), initializer=_ignore_sigint) as pool:
        engines = [e for e in opts.engines if e in language.engines]
        summary.voices, summary.dropped = available_voices(engines, pool, language.voices)
        if not summary.voices:
            reasons = "\n  ".join(summary.dropped)
            raise SynthError(f"no TTS voice works here:\n  {reasons}\ninstall the engines with {SETUP_HINT}")
        record = voices_record(summary.voices, opts.seed, text_sha256, language=opts.language)
        check_cache(opts.out, record)
        opts.out.mkdir(parents=True, exist_ok=True)
        (opts.out / "voices.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        plans = plan_corpus(sentences, summary.voices, opts.seed, opts.train_readings)
        try:
            render_in_order(plans, opts, pool, summary, skipped)
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    for split in SPLITS:
        write_split(opts.out, split, summary.kept[split])
    record = voices_record(summary.voices, opts.seed, text_sha256, summary.kept, opts.language)
    (opts.out / "voices.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    summary.wall_s = time.perf_counter() - start
    return summary


def render_speeds(summary: Summary) -> dict[str, float]:
    """Audio seconds rendered per second of one worker's time, by engine (what this run rendered)."""
    audio_s: Counter[str] = Counter()
    worker_s: Counter[str] = Counter()
    for results in summary.kept.values():
        for r in results:
            if not r.cached and r.info is not None and r.seconds > 0:
                audio_s[r.utt.voice.engine] += r.info["duration"]
                worker_s[r.utt.voice.engine] += r.seconds
    return {engine: audio_s[engine] / worker_s[engine] for engine in sorted(worker_s)}


def report(summary: Summary, opts: SynthOptions) -> None:
    """Print what was written, the speed, and what failed or was dropped."""
    for split in SPLITS:
        kept = summary.kept[split]
        hours = sum(r.info["duration"] for r in kept) / 3600
        speakers = len({r.utt.voice.speaker for r in kept})
        print(
            f"{opts.out / f'synth-{split}.json'}: {len(kept)} utterances ({hours:.3f} h, {speakers} voices)"
        )
    cached = sum(r.cached for rs in summary.kept.values() for r in rs)
    speed = summary.rendered_s / summary.wall_s if summary.wall_s else 0.0
    print(
        f"rendered {summary.rendered_s / 3600:.3f} h of audio in {summary.wall_s:.1f} s "
        f"({speed:.1f}x real time, {opts.workers} workers); {cached} utterances were already there"
    )
    per_engine = render_speeds(summary)
    if per_engine:
        rates = ", ".join(f"{engine} {rate:.1f}" for engine, rate in per_engine.items())
        print(f"audio-s rendered per worker-s, by engine: {rates}")
    held_out: dict[str, list[str]] = {}
    for v in summary.voices:
        if v.held_out:
            held_out.setdefault(v.engine, []).append(v.name)
    test_voices = "; ".join(  # an engine with many held-out voices is one count
        f"{engine} {', '.join(names) if len(names) <= 4 else f'({len(names)} voices)'}"
        for engine, names in held_out.items()
    )
    test_voices = test_voices or "none"
    print(f"voices: {len(summary.voices)} ({opts.out / 'voices.json'}); held out for test: {test_voices}")
    if not any(v.held_out for v in summary.voices):
        print("note: no held-out voice among the chosen engines, so the test split is empty")
    for split in summary.exhausted:
        print(f"note: {split} ran out of sentences before its share of --hours {opts.hours}")
    for line in summary.dropped:
        print(f"dropped {line}", file=sys.stderr)
    if summary.failures:
        per_voice = Counter(r.utt.voice.label for r in summary.failures)
        counts = ", ".join(f"{label}: {n}" for label, n in per_voice.most_common())
        print(f"{len(summary.failures)} utterances failed and were skipped ({counts})", file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SynthOptions(out=Path())
    parser.add_argument("--out", type=Path, required=True, help="corpus root (created)")
    parser.add_argument(
        "--text",
        type=Path,
        nargs="+",
        default=[],
        help="sentence files, one per line, or a folder of fortune files (default: the language's; "
        f"en: {LANGUAGES['en'].text}, es: Debian fortunes-es in {LANGUAGES['es'].text})",
    )
    parser.add_argument(
        "--language",
        choices=sorted(LANGUAGES),
        default="en",
        help="what the voices read and which letters the transcripts keep (datasets/languages.py); es "
        "renders with espeak-ng and Kokoro only, for configs/jasper5x3_cpu_es.yaml",
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=defaults.hours,
        help="total audio across splits, rendered 90/5/5 into train/dev/test; 0: every sentence",
    )
    parser.add_argument(
        "--max_sentences",
        type=int,
        default=defaults.max_sentences,
        help="use at most this many sentences in all (0: no limit)",
    )
    parser.add_argument(
        "--train_readings",
        type=int,
        default=defaults.train_readings,
        help="make the training share of --hours this many times as large and read each training sentence "
        "up to this many times, by different voices while there are any; every sentence is read once "
        "before any is read again, so with --hours 0 each is read this many times; dev and test stay as "
        "they are (default 1)",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        default=list(defaults.engines),
        help="engines to use (default: every one installed)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="decides splits, voices and variation"
    )
    parser.add_argument(
        "--workers", type=int, default=defaults.workers, help="parallel processes (default: CPU count)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first utterance an engine fails to render, writing no manifest (default: "
        "report it, leave it out, go on, exit 3)",
    )


def run(args: argparse.Namespace) -> int:
    if min(args.hours, args.max_sentences, args.seed) < 0 or min(args.workers, args.train_readings) < 1:
        print(
            "error: --hours, --max_sentences and --seed must be >= 0, --workers and --train_readings >= 1",
            file=sys.stderr,
        )
        return 1
    opts = SynthOptions(
        out=args.out,
        text=tuple(args.text),
        hours=args.hours,
        max_sentences=args.max_sentences,
        train_readings=args.train_readings,
        engines=tuple(dict.fromkeys(args.engines)),
        seed=args.seed,
        workers=args.workers,
        language=args.language,
    )
    skipped = Skipped("data synth", strict=args.strict)
    try:
        summary = synthesize_corpus(opts, skipped)
    except SynthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished files are kept; run the same command again to resume", file=sys.stderr)
        return 130
    report(summary, opts)
    kept = sum(len(rs) for rs in summary.kept.values())
    return skipped.finish(kept, "utterances") if kept else 1
