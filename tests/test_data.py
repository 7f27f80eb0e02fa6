"""Manifests, dataset and samplers: real files in, batches that match the manifest out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import mini_manifest, require_shared
from hypothesis import given, settings
from hypothesis import strategies as st

from jasper import audio, config
from jasper.data import (
    AudioDataset,
    BucketingBatchSampler,
    ManifestError,
    ShardedEvalSampler,
    Unreadable,
    build_loader,
    collate,
    load_utterances,
)
from jasper.text import Tokenizer, normalize

REPO = Path(__file__).resolve().parents[1]
CFG = config.load(REPO / "configs" / "jasper10x5dr_speedp-online_speca.yaml")
TOK = Tokenizer(CFG["labels"])
VAL = config.section(CFG, "input_val", "audio_dataset")
TRAIN = config.section(CFG, "input_train", "audio_dataset")


def _mini() -> Path:
    return require_shared("data", "librispeech-real-mini")


def _reference_manifest(root: Path, out: Path) -> list[dict]:
    entries = []
    for trans in sorted(root.glob("*/*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            uid, text = line.split(" ", 1)
            f = trans.parent / f"{uid}.flac"
            info = sf.info(str(f))
            entries.append(
                {
                    "transcript": text.lower(),
                    "files": [
                        {
                            "channels": 1,
                            "sample_rate": 16000.0,
                            "duration": info.duration,
                            "num_samples": info.frames,
                            "fname": str(f.relative_to(root)),
                            "speed": 1,
                        }
                    ],
                    "original_duration": info.duration,
                    "original_num_samples": info.frames,
                }
            )
    out.write_text(json.dumps(entries, indent=2))
    return entries


def test_both_manifest_formats_give_the_same_utterances(tmp_path: Path) -> None:
    root = _mini()
    mini_manifest(root, tmp_path / "nemo.json")
    _reference_manifest(root, tmp_path / "ref.json")
    a, sa = load_utterances([tmp_path / "nemo.json"], root, TOK, VAL)
    b, sb = load_utterances([tmp_path / "ref.json"], root, TOK, VAL)
    assert sa.kept == sb.kept == 36
    assert [(u.id, u.text, u.ids) for u in a] == [(u.id, u.text, u.ids) for u in b]
    two, s2 = load_utterances([tmp_path / "nemo.json", tmp_path / "ref.json"], root, TOK, VAL)
    assert s2.kept == 72 and len(two) == 72


def test_loader_batches_match_manifest(tmp_path: Path) -> None:
    root = _mini()
    entries = mini_manifest(root, tmp_path / "m.json")
    utts, _ = load_utterances([tmp_path / "m.json"], root, TOK, dict(VAL, trim_silence=False))
    ds = AudioDataset(utts, dict(VAL, trim_silence=False))
    seen = 0
    for batch in build_loader(ds, ShardedEvalSampler(ds.durations(), 5), workers=2):
        for row, idx in enumerate(batch.indices.tolist()):
            entry = entries[idx]
            samples, _ = sf.read(root / entry["audio_filepath"], dtype="float32")
            n = int(batch.audio_lens[row])
            assert n == len(samples)
            assert torch.equal(batch.audio[row, :n], torch.from_numpy(samples))
            assert (batch.audio[row, n:] == 0).all()
            ids = batch.targets[row, : int(batch.target_lens[row])].tolist()
            assert ids == TOK.encode(normalize(entry["text"], TOK.labels))
            seen += 1
    assert seen == 36


def test_duration_filter_and_max_utts(tmp_path: Path) -> None:
    root = _mini()
    mini_manifest(root, tmp_path / "m.json")
    utts, stats = load_utterances(
        [tmp_path / "m.json"], root, TOK, dict(VAL, max_duration=5.0, min_duration=3.3)
    )
    assert all(3.3 <= u.duration <= 5.0 for u in utts) and stats.filtered == 36 - len(utts) > 0
    utts, _ = load_utterances([tmp_path / "m.json"], root, TOK, dict(VAL, max_utts=7))
    assert len(utts) == 7


def test_speed_perturbation_changes_durations_within_range(tmp_path: Path) -> None:
    root = _mini()
    mini_manifest(root, tmp_path / "m.json")
    cfg = dict(TRAIN, trim_silence=False)
    utts, _ = load_utterances([tmp_path / "m.json"], root, TOK, cfg)
    ds = AudioDataset(utts[:6], cfg, augment=True)
    ratios = []
    for i in range(6):
        original = utts[i].duration * 16000
        ratios.append(ds[i][0].shape[0] / original)
    assert all(1 / 1.15 - 0.01 <= r <= 1 / 0.85 + 0.01 for r in ratios)
    assert len({round(r, 4) for r in ratios}) > 1, "rates must vary"
    first = ds[0][0]
    assert torch.equal(first, ds[0][0]), "same epoch and index give the same perturbation"
    ds.set_epoch(1)
    assert first.shape != ds[0][0].shape


def test_preloaded_audio_gives_the_same_items_every_epoch(tmp_path: Path) -> None:
    """The audio cache changes where samples come from, not what an epoch reads."""
    root = _mini()
    mini_manifest(root, tmp_path / "m.json")
    utts, _ = load_utterances([tmp_path / "m.json"], root, TOK, TRAIN)
    plain, cached = AudioDataset(utts[:5], TRAIN, augment=True), AudioDataset(utts[:5], TRAIN, augment=True)
    assert cached.cache_bytes() == pytest.approx(sum(u.duration for u in utts[:5]) * 16000 * 4, rel=1e-3)
    cached.preload(threads=2)
    assert len(cached.cache) == 5
    before = {k: v.copy() for k, v in cached.cache.items()}
    for epoch in (1, 2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(5):
            assert torch.equal(plain[i][0], cached[i][0])
    assert all(np.array_equal(before[k], v) for k, v in cached.cache.items()), "perturbation wrote to it"


def _good_and_corrupt(tmp_path: Path, *entries: dict) -> Path:
    """A manifest of a readable a.wav, `entries`, then a corrupt.wav (written beside it)."""
    sf.write(tmp_path / "a.wav", np.zeros(1600, dtype=np.float32) + 0.1, 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF garbage")
    lines = [
        json.dumps({"audio_filepath": "a.wav", "duration": 0.1, "text": "a"}),
        *(json.dumps(e) for e in entries),
        json.dumps({"audio_filepath": "corrupt.wav", "duration": 1, "text": "b"}),
    ]
    return _write_manifest(tmp_path, lines)


def test_preload_leaves_out_unreadable_files_which_still_fail_when_read(tmp_path: Path) -> None:
    utts, _ = load_utterances([_good_and_corrupt(tmp_path)], tmp_path, TOK, VAL)
    ds = AudioDataset(utts, VAL, skip_bad=True)
    ds.preload()
    assert list(ds.cache) == [(0, 0)]
    assert isinstance(ds[1], Unreadable) and "corrupt.wav" in ds[1].error


def test_multichannel_is_downmixed_per_sample(tmp_path: Path) -> None:
    left = np.linspace(-0.5, 0.5, 8000, dtype=np.float32)
    right = np.zeros(8000, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    out = audio.load(path, 8000)
    assert out.shape == (8000,) and np.allclose(out, left / 2)
    assert audio.load(path, 16000).shape[0] == 16000


def _write_manifest(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bad.json"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_manifests_name_file_and_line(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, dtype=np.float32) + 0.1, 16000)
    good = json.dumps({"audio_filepath": "a.wav", "duration": 0.1, "text": "a"})
    cases = {
        "invalid JSON": [good, "{not json"],
        "missing field 'text'": [good, json.dumps({"audio_filepath": "a.wav", "duration": 0.1})],
        "escapes the dataset dir": [
            good,
            json.dumps({"audio_filepath": "../x.wav", "duration": 1, "text": "a"}),
        ],
        "does not exist": [good, json.dumps({"audio_filepath": "missing.wav", "duration": 1, "text": "a"})],
    }
    for message, lines in cases.items():
        with pytest.raises(ManifestError, match=rf"bad\.json:2: .*{message}"):
            load_utterances([_write_manifest(tmp_path, lines)], tmp_path, TOK, VAL)
    broken = tmp_path / "array.json"
    broken.write_text('[{"transcript": "a",')
    with pytest.raises(ManifestError, match=r"array\.json: invalid JSON"):
        load_utterances([broken], tmp_path, TOK, VAL)


def test_skip_bad_counts_instead_of_raising(tmp_path: Path) -> None:
    manifest = _good_and_corrupt(tmp_path, {"audio_filepath": "missing.wav", "duration": 1, "text": "a"})
    utts, stats = load_utterances([manifest], tmp_path, TOK, VAL, skip_bad=True)
    assert len(utts) == 2 and len(stats.skipped) == 1 and "missing.wav" in stats.skipped[0]
    ds = AudioDataset(utts, VAL, skip_bad=True)
    batch = collate([ds[0], ds[1]])
    assert len(batch) == 1 and batch.skipped == 1
    with pytest.raises(audio.AudioError, match="corrupt.wav"):
        AudioDataset(utts, VAL)[1]


def test_zero_length_and_silent_audio_are_errors_naming_the_file(tmp_path: Path) -> None:
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(1600, dtype=np.float32), 16000)
    lines = [
        json.dumps({"audio_filepath": n, "duration": 0.1, "text": "a"}) for n in ("empty.wav", "silent.wav")
    ]
    utts, _ = load_utterances([_write_manifest(tmp_path, lines)], tmp_path, TOK, dict(VAL, min_duration=0))
    ds = AudioDataset(utts, VAL)
    for i, name in enumerate(("empty.wav", "silent.wav")):
        with pytest.raises(audio.AudioError, match=name):
            ds[i]


def test_bucketing_keeps_padding_low_and_covers_everything() -> None:
    rng = np.random.default_rng(0)
    durations = rng.uniform(1, 17, size=2000)
    sampler = BucketingBatchSampler(durations, batch_size=16, seed=3)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 2000 // 16 * 16
    padded = sum(max(durations[b]) * len(b) for b in batches)
    assert 1 - durations[flat].sum() / padded < 0.15
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_bucketing_resume_and_ranks() -> None:
    durations = np.arange(100, dtype=float)
    full = BucketingBatchSampler(durations, 4, num_replicas=2, rank=1, seed=5)
    full.set_epoch(2)
    expected = list(full)
    resumed = BucketingBatchSampler(durations, 4, num_replicas=2, rank=1, seed=5)
    resumed.set_epoch(2, skip=3)
    assert list(resumed) == expected[3:] and len(resumed) == len(expected) - 3
    r0 = BucketingBatchSampler(durations, 4, num_replicas=2, rank=0, seed=5)
    r0.set_epoch(2)
    assert len(list(r0)) == len(expected) and not set(sum(list(r0), [])) & set(sum(expected, []))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 120), world=st.integers(1, 4), accum=st.integers(1, 3), bs=st.integers(1, 5))
def test_global_batches_do_not_depend_on_how_they_are_split(n: int, world: int, accum: int, bs: int) -> None:
    """World x accumulation micro-batches of one step are the same utterances, in the same pieces,
    as one process reading the whole global batch in world * accumulation micro-batches."""
    durations = np.random.default_rng(n).uniform(1, 17, size=n)
    single = list(BucketingBatchSampler(durations, bs, seed=1, accumulation=world * accum))
    for rank in range(world):
        sampler = BucketingBatchSampler(
            durations, bs, num_replicas=world, rank=rank, seed=1, accumulation=accum
        )
        micro = list(sampler)
        assert len(micro) == len(sampler) == len(single) // world
        for i, batch in enumerate(micro):
            step, m = divmod(i, accum)
            assert batch == single[step * world * accum + m * world + rank]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 200), world=st.integers(1, 5), bs=st.integers(1, 9))
def test_sharded_eval_covers_every_sample_exactly_once(n: int, world: int, bs: int) -> None:
    durations = np.random.default_rng(n).uniform(0, 10, size=n)
    seen = []
    for rank in range(world):
        sampler = ShardedEvalSampler(durations, bs, num_replicas=world, rank=rank)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(n))


def test_trim_silence_matches_librosa_rule() -> None:
    sr = 16000
    tone = 0.5 * np.sin(2 * np.pi * 300 * np.arange(sr) / sr).astype(np.float32)
    x = np.concatenate([np.zeros(8000, np.float32), tone, np.zeros(8000, np.float32)])
    start, end = audio.nonsilent_region(x)
    # frames are 2048 long, hop 512, centred: the edges land within one frame of the tone
    assert 8000 - 2048 <= start <= 8000 and 24000 <= end <= 24000 + 2048
    assert audio.trim_silence(np.zeros(100, np.float32)).size == 0
