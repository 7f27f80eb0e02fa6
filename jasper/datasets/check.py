"""`jasper data check`: find what would break training, or silently lose data, before it starts.

Why: hours of training fail, or quietly learn less, on a manifest nobody read: one NaN file or
empty transcript gives a NaN loss (NeMo's threads 613 and 2246), a letter the labels lack is
dropped from every target it appears in, an utterance with fewer output frames than CTC needs
has an infinite loss, and a file listed twice (or in train and dev) skews training and WER.

Two passes, the first also run by `jasper train` before its first step (where it warns, or stops
with `--strict`):
  manifest  (no audio decoded; seconds for LibriSpeech's 281k utterances) entries that do not
            parse, empty transcripts, characters outside the labels, utterances too short for CTC,
            utterances over `max_duration` (dropped in training; reported, not an error), duplicate
            paths or ids, hours per manifest and per speaker (LibriSpeech-style ids: speaker-...)
  audio     (the command only; in parallel, with a progress bar) unreadable, empty or non-finite
            audio, and the sample rates and channel counts that will be resampled or down-mixed

A transcript character is "outside the labels" when it is a letter or digit and the config's
normaliser leaves nothing of it ("5" spelled "five" by the English cleaner is fine; "5" under the
`labels` normaliser, or "ж" for English labels, is lost). CTC needs at least one output frame per
label plus one between repeated labels: output frames come from the duration, the front end's hop
and every convolution's stride, as the model computes them.

The exit code of the command is 3 when a finding of a BLOCKING kind is present, else 0.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from jasper import config
from jasper.data import ManifestError, manifest_entries, parse_entry
from jasper.text import NORMALIZERS, Tokenizer

BLOCKING = (
    "bad entry",
    "unreadable audio",
    "empty audio",
    "non-finite audio",
    "empty transcript",
    "outside labels",
    "too short for CTC",
    "duplicate",
)
REPORTED = ("over max_duration",)
EXAMPLES = 3  # findings named per kind in the table (all of them with --all)
LIBRISPEECH_ID = re.compile(r"^(\d+)-\d+-\d+$")


@dataclass(frozen=True)
class Finding:
    kind: str
    where: str  # the manifest entry, or the audio file
    detail: str


@dataclass(frozen=True)
class ModelSpec:
    """What the checks need from a config: labels, normaliser, length limits, output stride."""

    labels: tuple[str, ...]
    normalizer: str | None  # None: transcripts are taken as they are
    sample_rate: int
    max_duration: float
    hop: int
    convs: tuple[tuple[int, int, int], ...]  # (kernel, stride, dilation) of each strided conv

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelSpec:
        split = "input_train" if "input_train" in cfg else "input_val"
        ds = config.section(cfg, split, "audio_dataset")
        fb = config.section(cfg, split, "filterbank_features")
        model = cfg.get("jasper") or cfg.get("quartznet")
        convs = []
        for block in model["encoder"]["blocks"]:
            b = config.fill(block, config.BLOCK)
            k, s, d = b["kernel_size"][0], b["stride"][0], b["dilation"][0]
            if s > 1:
                convs += [(k, s, d)] * b["repeat"]
        return cls(
            tuple(cfg["labels"]),
            ds["normalizer"] if ds["normalize_transcripts"] else None,
            ds["sample_rate"],
            float(ds["max_duration"]),
            round(fb["window_stride"] * fb["sample_rate"]),
            tuple(convs),
        )

    def output_frames(self, seconds: float) -> int:
        """The model's output frames for `seconds` of audio (features.feature_lengths, then each
        strided convolution's floor rule with 'same' padding)."""
        n = math.ceil(round(seconds * self.sample_rate) / self.hop)
        for k, s, d in self.convs:
            n = (n + 2 * (k // 2) * d - d * (k - 1) - 1) // s + 1
        return n


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    hours: dict[str, float] = field(default_factory=dict)  # per manifest
    utterances: dict[str, int] = field(default_factory=dict)
    speakers: dict[str, Counter] = field(default_factory=dict)  # manifest -> speaker -> hours
    outside: Counter = field(default_factory=Counter)  # character -> occurrences
    formats: Counter = field(default_factory=Counter)  # (sample rate, channels) -> files
    audio_checked: int = 0
    seen: dict[Any, str] = field(default_factory=dict)  # path or id -> the entry that had it first
    files: dict[Path, None] = field(
        default_factory=dict
    )  # every audio file, in order: the audio pass reads them

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in BLOCKING]

    def by_kind(self) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = defaultdict(list)
        for f in self.findings:
            out[f.kind].append(f)
        return out


def _outside_chars(text: str, spec: ModelSpec, cache: dict[str, bool]) -> list[str]:
    """Letters and digits of `text` of which the normaliser keeps nothing (cached per character)."""
    lost = []
    for ch in set(text):
        bad = cache.get(ch)
        if bad is None:
            if spec.normalizer is None:
                bad = ch.isalnum() and ch not in spec.labels
            else:
                bad = ch.isalnum() and not NORMALIZERS[spec.normalizer](ch, spec.labels)
            cache[ch] = bad
        if bad:
            lost.append(ch)
    return lost


def check_manifests(
    manifests: Sequence[str | Path], dataset_dir: str | Path, spec: ModelSpec, report: Report | None = None
) -> Report:
    """The manifest pass: every check that needs no audio decoding. Pass the `report` of other
    manifests (checked with another split's spec) to find duplicates across both."""
    report = report or Report()
    tokenizer = Tokenizer(spec.labels)
    normalize = NORMALIZERS[spec.normalizer] if spec.normalizer else None
    char_cache: dict[str, bool] = {}
    for manifest in manifests:
        name = str(manifest)
        report.hours[name], report.utterances[name] = 0.0, 0
        speakers = report.speakers[name] = Counter()
        for where, entry in manifest_entries(Path(manifest)):
            try:
                paths, _, _, duration, text, _ = parse_entry(where, entry, Path(dataset_dir))
            except ManifestError as e:
                report.findings.append(Finding("bad entry", where, str(e).removeprefix(f"{where}: ")))
                continue
            report.utterances[name] += 1
            report.hours[name] += duration / 3600
            report.files.update(dict.fromkeys(paths))
            uid = paths[0].stem
            speaker = LIBRISPEECH_ID.match(uid)
            if speaker:
                speakers[speaker.group(1)] += duration / 3600
            for key, what in ((paths[0], "path"), (("id", uid), "id")):
                if key in report.seen:
                    shown = uid if what == "id" else key
                    report.findings.append(
                        Finding("duplicate", where, f"{what} {shown} also in {report.seen[key]}")
                    )
                    break
                report.seen[key] = where
            if duration > spec.max_duration:
                report.findings.append(
                    Finding(
                        "over max_duration", where, f"{duration:.1f} s > {spec.max_duration:g} s: dropped"
                    )
                )
            lost = _outside_chars(text, spec, char_cache)
            if lost:
                report.outside.update(ch for ch in text if ch in lost)
                report.findings.append(
                    Finding("outside labels", where, f"{''.join(sorted(lost))!r} in {text!r}")
                )
            ids = tokenizer.encode(normalize(text, spec.labels) if normalize else text)
            if not ids:
                report.findings.append(
                    Finding("empty transcript", where, f"{text!r} has no label characters")
                )
                continue
            needed = len(ids) + sum(a == b for a, b in zip(ids, ids[1:], strict=False))
            frames = spec.output_frames(duration)
            if frames < needed:
                report.findings.append(
                    Finding(
                        "too short for CTC",
                        where,
                        f"{duration:.2f} s gives {frames} output frames, its {len(ids)} labels need {needed}",
                    )
                )
    return report


def _probe_audio(path: Path) -> tuple[str, str, int, int] | None:
    """(kind, detail, rate, channels) of a problem, (\"\", \"\", rate, channels) when fine."""
    try:
        with sf.SoundFile(str(path)) as f:
            rate, channels = f.samplerate, f.channels
            samples = f.read(dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile's errors, a missing file, a directory
        return "unreadable audio", f"{type(e).__name__}: {e}", 0, 0
    if samples.size == 0:
        return "empty audio", "no samples", rate, channels
    if not np.isfinite(samples).all():
        return (
            "non-finite audio",
            f"{int((~np.isfinite(samples)).sum())} NaN or infinite samples",
            rate,
            channels,
        )
    return "", "", rate, channels


def check_audio(report: Report, workers: int, progress: bool) -> None:
    """The audio pass: read every file the manifest pass listed once, in `workers` threads."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(_probe_audio, report.files)
        for path, (kind, detail, rate, channels) in tqdm(
            zip(report.files, results, strict=True),
            total=len(report.files),
            desc="audio",
            unit="file",
            disable=not progress,
        ):
            report.audio_checked += 1
            if kind:
                report.findings.append(Finding(kind, str(path), detail))
            else:
                report.formats[(rate, channels)] += 1


def table(report: Report, spec: ModelSpec, show_all: bool = False) -> str:
    """The report as text: sizes per manifest, then one row per kind of finding with examples."""
    lines = [f"{'manifest':<48} {'utterances':>10} {'hours':>8} {'speakers':>8}"]
    for name, hours in report.hours.items():
        speakers = len(report.speakers.get(name, ())) or "-"
        shown = name if len(name) <= 48 else "..." + name[-45:]
        lines.append(f"{shown:<48} {report.utterances[name]:>10} {hours:>8.2f} {speakers!s:>8}")
    for name, per in report.speakers.items():
        if per:
            low, high = min(per.values()) * 60, max(per.values()) * 60
            lines.append(f"  {Path(name).name}: {len(per)} speakers, {low:.1f}-{high:.1f} min each")
    if report.audio_checked:
        for (rate, channels), n in sorted(report.formats.items()):
            what = []
            if rate != spec.sample_rate:
                what.append(f"resampled to {spec.sample_rate} Hz")
            if channels > 1:
                what.append("down-mixed to mono")
            lines.append(
                f"  {n} files at {rate} Hz, {channels} channel(s){': ' + ', '.join(what) if what else ''}"
            )
    kinds = report.by_kind()
    lines.append("")
    lines.append(f"{'finding':<20} {'count':>7}  {'effect':<8} examples")
    for kind in (*BLOCKING, *REPORTED):
        found = kinds.get(kind, [])
        effect = "error" if kind in BLOCKING else "reported"
        lines.append(f"{kind:<20} {len(found):>7}  {effect:<8} " + ("-" if not found else ""))
        for f in found if show_all else found[:EXAMPLES]:
            lines.append(f"    {f.where}: {f.detail}")
        if not show_all and len(found) > EXAMPLES:
            lines.append(f"    ... and {len(found) - EXAMPLES} more (--all lists them)")
    if report.outside:
        common = ", ".join(f"{ch!r} x{n}" for ch, n in report.outside.most_common(12))
        lines.append(f"characters outside the labels: {common}")
    if not report.audio_checked:
        lines.append("(audio not decoded: `jasper data check` reads it)")
    return "\n".join(lines)


def summary_line(report: Report) -> str:
    """One line for `jasper train`'s log: the counts per kind."""
    counts = Counter(f.kind for f in report.findings)
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "no findings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "manifests", nargs="+", help="manifests to check (the reference's JSON or NeMo JSON lines)"
    )
    parser.add_argument(
        "--model_config", required=True, help="the config to train: labels, normaliser, max_duration, strides"
    )
    parser.add_argument(
        "--dataset_dir", default=".", help="root of the manifests' relative paths, as for train and infer"
    )
    config.add_override_argument(parser)
    parser.add_argument("--workers", type=int, default=4, help="threads reading audio (default 4)")
    parser.add_argument("--no_audio", action="store_true", help="skip the audio pass (what train runs)")
    parser.add_argument("--all", action="store_true", help="list every finding, not the first three per kind")
    parser.add_argument(
        "--progress", choices=("auto", "on", "off"), default="auto", help="the audio pass's progress bar"
    )


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.model_config, args.override_config)
    spec = ModelSpec.from_config(cfg)
    report = check_manifests(args.manifests, args.dataset_dir, spec)
    if not args.no_audio:
        progress = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
        check_audio(report, args.workers, progress)
    print(table(report, spec, args.all))
    blocking = report.blocking
    if blocking:
        print(
            f"jasper data check: {len(blocking)} finding(s) would break training or lose data",
            file=sys.stderr,
        )
        return 3
    return 0
