"""Manifests, the audio dataset, length-bucketed samplers and the collate function.

Data flows one way: manifest entries -> `Utterance` records (filtered, transcripts normalised and
encoded once) -> `AudioDataset` items (audio read, trimmed and perturbed in loader workers) ->
padded batches. Features are computed later, on the training device, from the padded audio.

Two manifest formats are read: the reference's JSON array (`transcript`, `files[]`,
`original_duration`) and NeMo-style JSON lines (`audio_filepath`, `duration`, `text`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset, Sampler

from jasper import audio as audio_io
from jasper import config
from jasper.text import NORMALIZERS, Tokenizer

log = logging.getLogger(__name__)


class ManifestError(config.ConfigError):
    """A manifest that cannot be used; the message names the file and the entry (or line)."""


@dataclass
class Utterance:
    """One manifest entry after filtering: the audio files to draw from and the encoded transcript."""

    id: str
    paths: list[Path]
    durations: list[float]
    duration: float
    text: str
    ids: list[int]
    offset: float = 0.0


@dataclass
class LoadStats:
    """What loading kept and dropped, so nothing disappears silently."""

    kept: int = 0
    kept_hours: float = 0.0
    filtered: int = 0
    filtered_hours: float = 0.0
    dropped_chars: int = 0
    empty_transcripts: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.kept} utterances ({self.kept_hours:.2f} h), filtered by duration "
            f"{self.filtered} ({self.filtered_hours:.2f} h)"
        )
        if self.dropped_chars:
            text += f", {self.dropped_chars} transcript characters outside the labels dropped"
        if self.empty_transcripts:
            text += f", {self.empty_transcripts} empty transcripts"
        if self.skipped:
            text += f", {len(self.skipped)} entries skipped"
        return text


def manifest_entries(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (where, entry) from a JSON array or JSON-lines manifest; `where` names file and entry."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        for i, entry in enumerate(entries):
            yield f"{path} entry {i}", entry
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None


def _resolve(fname: str, data_dir: Path, where: str, allow_absolute: bool) -> Path:
    path = Path(fname)
    if path.is_absolute():
        if not allow_absolute:
            raise ManifestError(
                f"{where}: absolute path {fname!r}; reference manifests use paths relative to the dataset dir"
            )
        return path
    resolved = (data_dir / path).resolve()
    if not resolved.is_relative_to(data_dir.resolve()):
        raise ManifestError(f"{where}: path {fname!r} escapes the dataset dir {data_dir}")
    return resolved


def parse_entry(
    where: str, entry: Any, data_dir: Path
) -> tuple[list[Path], list[float], list[float], float, str, float]:
    """-> paths, durations, speeds, original duration, raw transcript, offset."""
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected an object, got {type(entry).__name__}")
    try:
        if "files" in entry:  # the reference's format
            files = entry["files"]
            paths = [_resolve(f["fname"], data_dir, where, allow_absolute=False) for f in files]
            durations = [float(f["duration"]) for f in files]
            speeds = [float(f.get("speed", 1)) for f in files]
            original = float(entry.get("original_duration", max(durations)))
            text = entry.get("transcript")
            if not text and entry.get("text_filepath"):
                text = _resolve(entry["text_filepath"], data_dir, where, False).read_text().replace("\n", "")
        else:  # NeMo JSON lines
            paths = [_resolve(entry["audio_filepath"], data_dir, where, allow_absolute=True)]
            durations = [float(entry["duration"])]
            speeds, original, text = [1.0], durations[0], entry["text"]
    except KeyError as e:
        raise ManifestError(f"{where}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ManifestError(f"{where}: malformed entry ({e})") from None
    if not isinstance(text, str):
        raise ManifestError(f"{where}: transcript must be a string, got {type(text).__name__}")
    return paths, durations, speeds, original, text, float(entry.get("offset", 0.0))


def load_utterances(
    manifests: Sequence[str | Path],
    data_dir: str | Path,
    tokenizer: Tokenizer,
    dataset_config: dict[str, Any],
    check_files: bool = True,
    skip_bad: bool = False,
) -> tuple[list[Utterance], LoadStats]:
    """Read manifests and apply the reference's filters (spec 2.3) to a list of utterances.

    `dataset_config` is a filled `audio_dataset` section. With `skip_bad`, entries with a missing
    audio file or a malformed record are skipped and listed in the stats; otherwise they raise.
    """
    data_dir = Path(data_dir)
    cfg = dataset_config
    stats = LoadStats()
    out: list[Utterance] = []
    for manifest in manifests:
        kept_here = 0
        for where, entry in manifest_entries(Path(manifest)):
            try:
                paths, durations, speeds, original, text, offset = parse_entry(where, entry, data_dir)
                if check_files:
                    for p in paths:
                        if not p.is_file():
                            raise ManifestError(f"{where}: audio file {p} does not exist")
            except ManifestError as e:
                if not skip_bad:
                    raise
                log.warning("skipping: %s", e)
                stats.skipped.append(str(e))
                continue
            if cfg["pad_to_max_duration"] and not cfg["ignore_offline_speed_perturbation"]:
                duration = max(durations)
            else:
                duration = original
            if not cfg["min_duration"] <= duration <= cfg["max_duration"]:
                stats.filtered += 1
                stats.filtered_hours += original / 3600
                continue
            if cfg["ignore_offline_speed_perturbation"]:
                keep = [i for i, s in enumerate(speeds) if s == 1.0]
                if not keep:
                    raise ManifestError(f"{where}: no file with speed 1 to keep")
                paths, durations = [paths[i] for i in keep], [durations[i] for i in keep]
            clean = text
            if cfg["normalize_transcripts"]:
                clean = NORMALIZERS[cfg["normalizer"]](text, tokenizer.labels)
            ids, dropped = tokenizer.encode_with_stats(clean)
            stats.dropped_chars += dropped
            stats.empty_transcripts += not ids
            out.append(
                Utterance(paths[0].stem, paths, durations, original, tokenizer.decode(ids), ids, offset)
            )
            stats.kept += 1
            stats.kept_hours += original / 3600
            kept_here += 1
            if cfg["max_utts"] and kept_here >= cfg["max_utts"]:
                break
    if cfg["sort_by_duration"]:
        out.sort(key=lambda u: u.duration)
    return out, stats


@dataclass(frozen=True)
class Unreadable:
    """An item whose audio failed to load (`AudioDataset(skip_bad=True)`): its index and the error."""

    index: int
    error: str


class AudioDataset(Dataset):
    """Items `(audio float32 [L], transcript ids int64 [S], index)` with the configured perturbations.

    Random choices (which speed file, speed rate, gain, shift) come from a generator seeded by
    `(seed, epoch, index)`, so a resumed epoch draws the same perturbations as the original run,
    whichever worker loads the item.
    """

    def __init__(
        self,
        utterances: list[Utterance],
        dataset_config: dict[str, Any],
        seed: int = 0,
        augment: bool = False,
        skip_bad: bool = False,
    ) -> None:
        self.utterances = utterances
        self.cfg = dataset_config
        self.sample_rate = dataset_config["sample_rate"]
        self.seed, self.epoch = seed, 0
        self.augment = augment
        self.skip_bad = skip_bad
        self.cache: dict[tuple[int, int], np.ndarray] = {}  # (index, path choice) -> samples (`preload`)
        self.threads = 1  # per batch (`__getitems__`): more only where the batch is read in-process

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.utterances)

    def durations(self) -> list[float]:
        return [u.duration for u in self.utterances]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int] | Unreadable:
        utt = self.utterances[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        choice = int(rng.integers(len(utt.paths))) if len(utt.paths) > 1 else 0
        samples = self.cache.get((index, choice))
        if samples is None:
            try:
                samples = self._read(index, choice)
            except audio_io.AudioError as e:
                if self.skip_bad:
                    return Unreadable(index, str(e))
                raise
        if self.augment:  # never in place: a cached recording is read again next epoch
            samples = self._perturb(samples, rng)
        return torch.from_numpy(samples), torch.tensor(utt.ids, dtype=torch.int64), index

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor, int] | Unreadable]:
        """A batch's items (the DataLoader's batched fetch), on `threads` threads when above 1.

        In-process loading (`num_workers=0`) leaves the cores to training while it waits, so the
        batch is read on as many threads as training uses: resampling and decoding release the GIL.
        """
        if self.threads <= 1 or len(indices) < 2:
            return [self[i] for i in indices]
        return list(_thread_pool(self.threads).map(self.__getitem__, indices))

    def _read(self, index: int, choice: int) -> np.ndarray:
        """Recording `choice` of utterance `index`, decoded, resampled and (per the config) trimmed."""
        utt = self.utterances[index]
        path, duration = utt.paths[choice], utt.durations[choice] if utt.offset else 0.0
        samples = audio_io.load(path, self.sample_rate, utt.offset, duration)
        if self.cfg["trim_silence"]:
            samples = audio_io.trim_silence(samples)
        if samples.size == 0:
            raise audio_io.AudioError(f"{path}: no audio (empty or all silence)")
        return samples

    def cache_bytes(self) -> int:
        """What `preload` would hold: every recording's float32 samples, by the manifest's durations."""
        return sum(round(d * self.sample_rate) * 4 for u in self.utterances for d in u.durations)

    def preload(self, threads: int = 1, progress: bool = False) -> float:
        """Decode and trim every recording once, into memory; the seconds it took.

        Decoding and trimming are the same every epoch, and on a small machine the loader worker
        doing them again competes with the training threads for the cores: with the cache, every
        epoch costs the loader only the perturbations. Loader workers are forked after this
        and share the cache (copy-on-write; nothing writes to it). A recording that fails to load is
        left out and fails again, as without the cache, when an epoch reads it.
        """
        from tqdm import tqdm

        def read(job: tuple[int, int]) -> np.ndarray | None:
            try:
                return self._read(*job)
            except audio_io.AudioError:
                return None

        started = time.perf_counter()
        jobs = [(i, c) for i, u in enumerate(self.utterances) for c in range(len(u.paths))]
        with ThreadPoolExecutor(max(1, threads)) as pool:  # libsndfile and soxr release the GIL
            results = pool.map(read, jobs)
            for job, samples in tqdm(
                zip(jobs, results, strict=True), total=len(jobs), desc="audio cache", disable=not progress
            ):
                if samples is not None:
                    self.cache[job] = samples
        return time.perf_counter() - started

    def _perturb(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        speed, gain, shift = (
            self.cfg[k] for k in ("speed_perturbation", "gain_perturbation", "shift_perturbation")
        )
        if speed and rng.random() < speed["p"]:
            if speed["discrete"]:
                rate = float(rng.choice([speed["min_rate"], 1.0, speed["max_rate"]]))
            else:
                rate = float(rng.uniform(speed["min_rate"], speed["max_rate"]))
            samples = audio_io.speed_perturb(samples, rate, self.sample_rate)
        if gain and rng.random() < gain["p"]:
            samples = samples * np.float32(
                10 ** (rng.uniform(gain["min_gain_dbfs"], gain["max_gain_dbfs"]) / 20)
            )
        if shift and rng.random() < shift["p"]:
            n = int(rng.uniform(shift["min_shift_ms"], shift["max_shift_ms"]) * self.sample_rate // 1000)
            if 0 < abs(n) < samples.size:
                shifted = np.zeros_like(samples)
                if n > 0:
                    shifted[:-n] = samples[n:]
                else:
                    shifted[-n:] = samples[:n]
                samples = shifted
        return samples.astype(np.float32, copy=False)


@functools.cache
def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """One pool per size for the process (a dataset holds no pool: it is pickled to workers)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="jasper-load")


@dataclass
class Batch:
    """A padded batch: audio `[B, L]` + int32 lengths, targets `[B, S]` + int32 lengths, item indices."""

    audio: torch.Tensor
    audio_lens: torch.Tensor
    targets: torch.Tensor
    target_lens: torch.Tensor
    indices: torch.Tensor
    failures: tuple[Unreadable, ...] = ()

    @property
    def skipped(self) -> int:
        return len(self.failures)

    def pin_memory(self) -> Batch:
        return Batch(
            self.audio.pin_memory(),
            self.audio_lens.pin_memory(),
            self.targets.pin_memory(),
            self.target_lens.pin_memory(),
            self.indices,
            self.failures,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        kw = dict(device=device, non_blocking=non_blocking)
        return Batch(
            self.audio.to(**kw),
            self.audio_lens.to(**kw),
            self.targets.to(**kw),
            self.target_lens.to(**kw),
            self.indices,
            self.failures,
        )

    def __len__(self) -> int:
        return self.audio.shape[0]


def collate(items: list[tuple[torch.Tensor, torch.Tensor, int] | Unreadable]) -> Batch:
    """Zero-pad audio and targets on the right; items that failed to load travel as `failures`."""
    good = [it for it in items if not isinstance(it, Unreadable)]
    failures = tuple(it for it in items if isinstance(it, Unreadable))
    audio_lens = torch.tensor([a.shape[0] for a, _, _ in good], dtype=torch.int32)
    target_lens = torch.tensor([t.shape[0] for _, t, _ in good], dtype=torch.int32)
    audio = torch.zeros(len(good), int(audio_lens.max()) if good else 0)
    targets = torch.zeros(len(good), int(target_lens.max()) if good else 0, dtype=torch.int64)
    for i, (a, t, _) in enumerate(good):
        audio[i, : a.shape[0]] = a
        targets[i, : t.shape[0]] = t
    indices = torch.tensor([idx for _, _, idx in good], dtype=torch.int64)
    return Batch(audio, audio_lens, targets, target_lens, indices, failures)


class BucketingBatchSampler(Sampler[list[int]]):
    """Batches of similar duration, shuffled per epoch, sharded over ranks, resumable mid-epoch.

    Each epoch: shuffle (seeded by `seed + epoch`), sort by duration within buckets of
    `bucket_size` global batches, cut into global batches of `batch_size * num_replicas *
    accumulation` utterances (one optimizer step), shuffle the order of those batches, and cut
    each into micro-batches of `batch_size`: rank r's m-th micro-batch is slice `m * num_replicas
    + r`. The order thus depends on the global batch only, not on how it is split: 2 ranks x 1
    micro-batch read exactly what 1 rank x 2 micro-batches reads. Every rank sees the same number
    of batches (incomplete global batches are dropped in training). `set_epoch(e, skip=n)` skips
    the first n global batches of epoch e, so a resumed run continues with the same batch order.
    """

    def __init__(
        self,
        durations: Sequence[float],
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        bucket_size: int = 50,
        drop_last: bool = True,
        accumulation: int = 1,
    ) -> None:
        if batch_size < 1 or accumulation < 1:
            raise ValueError("batch_size and accumulation must be at least 1")
        self.durations = np.asarray(durations, dtype=np.float64)
        self.batch_size, self.num_replicas, self.rank = batch_size, num_replicas, rank
        self.accumulation = accumulation
        self.shuffle, self.seed, self.bucket_size, self.drop_last = shuffle, seed, bucket_size, drop_last
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def global_batches(self) -> list[np.ndarray]:
        """All ranks' batches of the current epoch, in order (one optimizer step's utterances each)."""
        n = len(self.durations)
        gbs = self.global_batch
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        chunk = gbs * self.bucket_size
        buckets = [order[i : i + chunk] for i in range(0, n, chunk)]
        order = (
            np.concatenate([b[np.argsort(self.durations[b], kind="stable")] for b in buckets]) if n else order
        )
        batches = [order[i : i + gbs] for i in range(0, n, gbs)]
        if batches and len(batches[-1]) < gbs and self.drop_last:
            batches.pop()
        if self.shuffle and batches:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_replicas * self.accumulation

    def __iter__(self) -> Iterator[list[int]]:
        b = self.batch_size
        for gb in self.global_batches()[self.skip :]:
            for m in range(self.accumulation):
                piece = m * self.num_replicas + self.rank
                yield gb[piece * b : (piece + 1) * b].tolist()

    def __len__(self) -> int:
        """Micro-batches this rank will read (`accumulation` per global batch)."""
        gbs = self.global_batch
        full = len(self.durations) // gbs
        total = full if self.drop_last or len(self.durations) % gbs == 0 else full + 1
        return max(total - self.skip, 0) * self.accumulation


class ShardedEvalSampler(Sampler[list[int]]):
    """Evaluation batches for one rank: every utterance exactly once across ranks, none repeated.

    Utterances are sorted by duration (less padding, faster) and dealt round-robin to ranks, so the
    counts differ by at most one; unlike the reference's DistributedSampler nothing is duplicated.
    """

    def __init__(
        self, durations: Sequence[float], batch_size: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        order = np.argsort(np.asarray(durations, dtype=np.float64), kind="stable")
        self.indices = order[rank::num_replicas]
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(0, len(self.indices), self.batch_size):
            yield self.indices[i : i + self.batch_size].tolist()

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)


def build_loader(
    dataset: AudioDataset, sampler: Sampler[list[int]], workers: int = 2, pin_memory: bool | None = None
) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` with batches from `sampler`; pinned memory when CUDA exists."""
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        prefetch_factor=4 if workers > 0 else None,
    )


def unique_ids(ids: Sequence[str]) -> list[str]:
    """Utterance ids made unique (`id#2`, `id#3`, ...) for keyed formats; the first keeps its name."""
    seen: dict[str, int] = {}
    out = []
    for name in ids:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def write_manifest(entries: list[dict], path: Path) -> None:
    """JSON array, indent 2 (the reference's layout), written to a temporary file and renamed.

    A manifest already holding exactly these entries is left untouched, so that its mtime still
    dates what was computed from it (the quickstart reuses evaluations newer than their inputs).
    """
    text = json.dumps(entries, indent=2)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def flac_info(path: Path) -> dict:
    """The sox `file_info` fields the reference's manifests hold, for one of our FLACs."""
    with sf.SoundFile(str(path)) as f:
        rate, channels, frames = f.samplerate, f.channels, f.frames
        samples = f.read(dtype="int16")
    duration = frames / rate
    return {
        "channels": channels,
        "sample_rate": float(rate),
        "bitdepth": 16,
        "bitrate": float(round(path.stat().st_size * 8 / duration)) if duration else 0.0,
        "duration": duration,
        "num_samples": frames,
        "encoding": "FLAC",
        "silent": not np.any(samples),
    }
