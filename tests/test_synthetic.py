"""Tests for jasper.datasets.synthetic: the split and voice plan (no engines needed), the audio
finishing, and `jasper data synth` end to end with whichever TTS engines are installed."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jasper.cli import main
from jasper.datasets import synthetic
from jasper.datasets.languages import load_sentences
from jasper.datasets.synthetic import (
    ENGINE_WEIGHTS,
    ENGINES,
    SPLITS,
    Utterance,
    finish,
    plan_corpus,
    render,
    split_sentences,
    trim_padding,
    voice_weights,
)
from jasper.datasets.voices import CATALOGUE, VOICES, Voice
from jasper.quickstart.run import DEFAULT_ENGINES

WORDS = (
    "the old man walked slowly along the river bank while the children played near the mill and "
    "a quiet wind moved through the tall grass as evening came over the little town by the sea"
).split()
SENTENCES = [" ".join(WORDS[i : i + 6 + i % 7]) for i in range(40)]
UID = re.compile(r"^(\d+)-(\d+)-(\d{4})$")
# Corpora here use the quickstart's fast engines; Kokoro (1.4 audio-s per worker-s) has test_kokoro.py.
FAST = ["--engines", *DEFAULT_ENGINES]


def synth_args(out: Path, text: Path, hours: str, workers: str) -> list[str]:
    """`jasper data synth` of `text` into `out` with the fast engines."""
    args = ["data", "synth", "--out", str(out), "--text", str(text), "--hours", hours, "--workers", workers]
    return [*args, *FAST]


def installed_engines() -> list[str]:
    return [e for e in ENGINES if synthetic.engine_missing(e) is None]


# ---------------------------------------------------------------------------------------------
# Planning, without engines


def test_split_sentences_disjoint_complete_and_seeded() -> None:
    splits = split_sentences(1000, seed=3)
    assert [len(splits[s]) for s in SPLITS] == [900, 50, 50]
    everything = [i for s in SPLITS for i in splits[s]]
    assert sorted(everything) == list(range(1000))
    assert split_sentences(1000, seed=3) == splits
    assert split_sentences(1000, seed=4) != splits
    small = split_sentences(5, seed=0)
    assert all(small[s] for s in SPLITS)


def test_plan_holds_voices_out_of_training_and_is_reproducible() -> None:
    sentences = [f"sentence number {i}" for i in range(2000)]
    plan = plan_corpus(sentences, VOICES, seed=7)
    speakers = {s: {u.voice.speaker for u in plan[s]} for s in SPLITS}
    held_out = {v.speaker for v in VOICES if v.held_out}
    assert speakers["test"] <= held_out
    assert not speakers["train"] & held_out
    assert speakers["dev"] <= speakers["train"]
    # every engine with a held-out voice is heard in test; piper has a single voice, which trains
    assert {u.voice.engine for u in plan["test"]} == {"espeak", "flite", "festival"}
    texts = {s: {u.text for u in plan[s]} for s in SPLITS}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]
    assert plan_corpus(sentences, VOICES, seed=7) == plan
    uids = [u.uid for s in SPLITS for u in plan[s]]
    assert len(set(uids)) == len(uids)
    for split in SPLITS:
        per_voice: dict[int, list[Utterance]] = {}
        for u in plan[split]:
            per_voice.setdefault(u.voice.speaker, []).append(u)
        for utts in per_voice.values():
            positions = [
                (u.chapter - synthetic.CHAPTER_BASE[split]) * synthetic.CHAPTER_SIZE + u.number for u in utts
            ]
            assert positions == list(range(len(utts)))
    for u in plan["train"]:
        assert 0.9 <= u.speed <= 1.1 and -6 <= u.peak_db <= -1 and 0.1 <= u.lead_s <= 0.5


def test_plan_of_one_utterance_does_not_depend_on_the_others() -> None:
    sentences = [f"sentence number {i}" for i in range(300)]
    full = {u.index: u for s in SPLITS for u in plan_corpus(sentences, VOICES, seed=1)[s]}
    some_engines = [v for v in VOICES if v.engine in ("flite", "festival")]
    other = {u.index: u for s in SPLITS for u in plan_corpus(sentences, some_engines, seed=1)[s]}
    assert full.keys() == other.keys()
    same = [i for i in full if full[i].voice == other[i].voice]
    assert all(full[i].speed == other[i].speed and full[i].seed == other[i].seed for i in same)


def test_the_plan_of_a_seed_stays_what_cached_corpora_were_rendered_from() -> None:
    """Pinned from the planner as of 054ec03: a change here re-renders every user's cached corpus."""
    sentences = [f"sentence number {i}" for i in range(600)]
    for readings in (1, 2):
        plan = plan_corpus(sentences, VOICES, seed=5, train_readings=readings)
        assert [(u.uid, round(u.speed, 6), u.seed) for u in plan["train"][:3]] == [
            ("303-1000-0000", 0.926033, 472230835),
            ("401-1000-0000", 1.096573, 1643847280),
            ("204-1000-0000", 1.084121, 2067861672),
        ]
        assert [(u.uid, u.seed) for u in plan["test"][:2]] == [
            ("302-3000-0000", 1522673746),
            ("302-3000-0001", 531397249),
        ]


def test_more_training_readings_extend_the_single_reading_plan() -> None:
    sentences = [f"sentence number {i}" for i in range(600)]
    one = plan_corpus(sentences, VOICES, seed=5)
    three = plan_corpus(sentences, VOICES, seed=5, train_readings=3)
    n = len(one["train"])
    assert three["train"][:n] == one["train"]  # a cached single-reading corpus stays valid
    assert three["dev"] == one["dev"] and three["test"] == one["test"]
    assert len(three["train"]) == 3 * n
    by_sentence: dict[int, list[Utterance]] = {}
    for u in three["train"]:
        by_sentence.setdefault(u.index, []).append(u)
    for utts in by_sentence.values():
        assert len({u.voice.speaker for u in utts}) == 3  # another voice each time
        assert not {u.voice.speaker for u in utts} & {v.speaker for v in VOICES if v.held_out}
    uids = [u.uid for u in three["train"]]
    assert len(set(uids)) == len(uids)
    two_voices = [v for v in VOICES if v.engine == "piper" or v.name == "kal16"]
    reread = plan_corpus(sentences, two_voices, seed=5, train_readings=3)["train"]
    assert len(reread) == 3 * len(plan_corpus(sentences, two_voices, seed=5)["train"])
    speakers: dict[int, list[int]] = {}
    for u in reread:  # both voices read every sentence before either reads it again
        speakers.setdefault(u.index, []).append(u.voice.speaker)
    assert all(sorted(s[:2]) == [201, 401] and len(s) == 3 for s in speakers.values())
    one_voice = plan_corpus(sentences, two_voices[:1], seed=5, train_readings=2)["train"]
    assert len(one_voice) == 2 * len({u.index for u in one_voice}) and len({u.voice for u in one_voice}) == 1
    with pytest.raises(ValueError, match="readings"):
        plan_corpus(sentences, VOICES, seed=5, train_readings=0)


def test_training_readings_scale_only_the_training_budget() -> None:
    options = synthetic.SynthOptions(out=Path(), hours=2.0, max_sentences=100)
    one = synthetic.budgets(options)
    two = synthetic.budgets(dataclasses.replace(options, train_readings=2))
    assert two["train"] == (2 * one["train"][0], one["train"][1])  # as many sentences, read twice
    assert two["dev"] == one["dev"] and two["test"] == one["test"]


def test_voice_weights_share_each_family_weight() -> None:
    pool = [v for v in CATALOGUE if not v.held_out]
    weights = voice_weights(pool)
    family = Counter()
    for voice, w in zip(pool, weights, strict=True):
        family[voice.engine] += w
    total = sum(ENGINE_WEIGHTS.values())
    for engine, w in family.items():
        assert w == pytest.approx(ENGINE_WEIGHTS[engine] / total)


def test_load_sentences_normalises_and_drops_empty_and_repeats(tmp_path: Path) -> None:
    text = tmp_path / "s.txt"
    text.write_text("Hello, World!\n\n   \nhello world\nMr. Smith has 2 cats.\n", encoding="utf-8")
    assert load_sentences([text]) == ["hello world", "mister smith has two cats"]


def test_finish_pads_with_noise_and_levels_without_clipping() -> None:
    tone = np.sin(np.arange(16000) * 2 * np.pi * 200 / 16000).astype(np.float32)
    speech = np.concatenate([np.zeros(8000, np.float32), tone, np.zeros(4000, np.float32)])
    assert trim_padding(speech).size == pytest.approx(16000 + 2 * 320, abs=2)
    utt = Utterance("train", 0, "x", VOICES[0], 1000, 0, 1.0, 0.0, -3.0, 0.2, 0.3, -70.0, 5)
    out = finish(speech, utt)
    assert out.size == pytest.approx(3200 + 16640 + 4800, abs=2)
    assert np.abs(out).max() == pytest.approx(10 ** (-3 / 20), abs=0.01)
    assert np.all(out[:3200] != 0) and np.abs(out[:3200]).max() < 0.01
    assert np.array_equal(finish(speech, utt), out)


def test_engine_failure_is_a_value_not_an_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> np.ndarray:
        raise RuntimeError("engine crashed")

    monkeypatch.setitem(synthetic.RENDERERS, "flite", broken)
    voice = Voice(999, "flite", "nosuch")
    utt = Utterance("train", 0, "hello", voice, 1000, 0, 1.0, 0.0, -3.0, 0.2, 0.3, -70.0, 5)
    result = render(utt, tmp_path)
    assert result.info is None and "engine crashed" in (result.error or "")
    assert not any(tmp_path.rglob("*.flac"))


def test_no_engine_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(synthetic, "engine_missing", lambda engine: f"{engine} is not installed")
    text = tmp_path / "s.txt"
    text.write_text("\n".join(SENTENCES), encoding="utf-8")
    assert main(["data", "synth", "--out", str(tmp_path / "c"), "--text", str(text), "--workers", "1"]) == 1
    assert "scripts/setup.sh" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# End to end with the installed engines


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not set(installed_engines()) - {"piper"}:
        pytest.skip(
            "no TTS engine with a held-out test voice is installed (espeak-ng, flite or festival): "
            "bash scripts/setup.sh"
        )
    root = tmp_path_factory.mktemp("synth")
    text = root / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = root / "corpus"
    assert main(synth_args(out, text, "0.01", "2")) == 0
    return out, text


def manifest(out: Path, split: str) -> list[dict]:
    entries = json.loads((out / f"synth-{split}.json").read_text(encoding="utf-8"))
    assert isinstance(entries, list)
    return entries


def test_layout_and_transcripts(corpus: tuple[Path, Path]) -> None:
    out, _ = corpus
    for split in SPLITS:
        flacs = sorted((out / split).rglob("*.flac"))
        assert flacs, split
        for flac in flacs:
            speaker, chapter = flac.parent.parent.name, flac.parent.name
            m = UID.match(flac.stem)
            assert m and m.group(1) == speaker and m.group(2) == chapter
            assert flac.parent.parent.parent == out / split
        for trans in (out / split).rglob("*.trans.txt"):
            assert trans.name == f"{trans.parent.parent.name}-{trans.parent.name}.trans.txt"
            ids = []
            for line in trans.read_text(encoding="utf-8").splitlines():
                uid, text = line.split(" ", 1)
                assert re.fullmatch(r"[A-Z' ]+", text)
                ids.append(uid)
            assert sorted(ids) == sorted(f.stem for f in trans.parent.glob("*.flac"))


def test_manifests_match_the_audio(corpus: tuple[Path, Path]) -> None:
    out, _ = corpus
    hours = 0.0
    for split in SPLITS:
        entries = manifest(out, split)
        assert entries
        for entry in entries:
            assert list(entry) == ["transcript", "files", "original_duration", "original_num_samples"]
            (f,) = entry["files"]
            info = sf.info(str(out / f["fname"]))
            assert (info.samplerate, info.channels) == (16000, 1)
            assert f["sample_rate"] == 16000 and f["channels"] == 1 and f["speed"] == 1
            assert f["num_samples"] == info.frames == entry["original_num_samples"]
            assert f["duration"] == pytest.approx(info.duration) == entry["original_duration"]
            assert entry["transcript"] == entry["transcript"].lower()
            uid = Path(f["fname"]).stem
            trans = next((out / f["fname"]).parent.glob("*.trans.txt")).read_text(encoding="utf-8")
            assert f"{uid} {entry['transcript'].upper()}\n" in trans
            hours += f["duration"] / 3600
    assert hours >= 0.01


def test_splits_are_disjoint_and_test_voices_are_unheard(corpus: tuple[Path, Path]) -> None:
    out, _ = corpus
    texts = {s: {e["transcript"] for e in manifest(out, s)} for s in SPLITS}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]
    voices = json.loads((out / "voices.json").read_text(encoding="utf-8"))["voices"]
    speakers = {s: {e["files"][0]["fname"].split("/")[1] for e in manifest(out, s)} for s in SPLITS}
    assert all(voices[s]["split"] == "test" for s in speakers["test"])
    assert all(voices[s]["split"] == "train" for s in speakers["train"] | speakers["dev"])
    assert all(voices[s]["engine"] in installed_engines() for s in voices)


def test_audio_edges_are_quiet_noise_not_digital_silence(corpus: tuple[Path, Path]) -> None:
    out, _ = corpus
    for flac in out.rglob("*.flac"):
        samples, _ = sf.read(str(flac), dtype="int16")
        assert np.count_nonzero(samples[:400]) > 200 and np.count_nonzero(samples[-400:]) > 200
        assert np.abs(samples[:400]).max() < 500  # leading silence: noise floor only
        assert 0.45 < np.abs(samples).max() / 32768 < 0.95


def test_same_seed_gives_the_same_bytes_and_reruns_are_cached(
    corpus: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    out, text = corpus
    small = tmp_path / "again"
    args = ["data", "synth", "--text", str(text), "--hours", "0.002", "--workers", "1", *FAST]
    assert main([*args, "--out", str(small)]) == 0
    flacs = sorted(small.rglob("*.flac"))
    assert flacs
    for flac in flacs:  # a smaller corpus is a prefix of the larger one, byte for byte
        assert flac.read_bytes() == (out / flac.relative_to(small)).read_bytes()
    before = {s: (out / f"synth-{s}.json").read_text(encoding="utf-8") for s in SPLITS}
    capsys.readouterr()
    assert main(["data", "synth", "--out", str(out), "--text", str(text), "--hours", "0.01", *FAST]) == 0
    assert "rendered 0.000 h" in capsys.readouterr().out
    assert {s: (out / f"synth-{s}.json").read_text(encoding="utf-8") for s in SPLITS} == before


def test_a_second_reading_extends_the_corpus_with_other_voices(
    corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, text = corpus
    once, twice = tmp_path / "once", tmp_path / "twice"
    args = [
        "data",
        "synth",
        "--text",
        str(text),
        "--hours",
        "0",
        "--max_sentences",
        "10",
        "--workers",
        "2",
        *FAST,
    ]
    assert main([*args, "--out", str(once)]) == 0
    shutil.copytree(once, twice)
    before = {s: manifest(once, s) for s in SPLITS}
    capsys.readouterr()
    assert main([*args, "--out", str(twice), "--train_readings", "2"]) == 0
    cached = sum(len(before[s]) for s in SPLITS)
    assert f"; {cached} utterances were already there" in capsys.readouterr().out
    after = {s: manifest(twice, s) for s in SPLITS}
    assert after["dev"] == before["dev"] and after["test"] == before["test"]
    first = {e["files"][0]["fname"]: e for e in before["train"]}
    both = {e["files"][0]["fname"]: e for e in after["train"]}
    assert all(both.get(fname) == entry for fname, entry in first.items())  # the first reading is reused
    assert len(after["train"]) == 2 * len(before["train"])
    readers: dict[str, list[str]] = {}
    for entry in after["train"]:
        readers.setdefault(entry["transcript"], []).append(entry["files"][0]["fname"].split("/")[1])
    assert {e["transcript"] for e in before["train"]} == set(readers)
    voices = json.loads((once / "voices.json").read_text(encoding="utf-8"))["voices"]
    if sum(v["split"] == "train" for v in voices.values()) > 1:  # each sentence read by two voices
        assert all(len(set(speakers)) == 2 for speakers in readers.values())


def test_the_extra_share_brings_new_sentences_before_any_is_read_again(
    corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, text = corpus  # --hours 0.01 reads only part of its 36 training sentences
    more = tmp_path / "more"
    shutil.copytree(out, more)
    before = manifest(out, "train")
    capsys.readouterr()
    args = synth_args(more, text, "0.01", "2")
    assert main([*args, "--train_readings", "2"]) == 0
    cached = sum(len(manifest(out, s)) for s in SPLITS)  # the single-reading corpus is reused whole
    assert f"; {cached} utterances were already there" in capsys.readouterr().out
    after = manifest(more, "train")
    texts = [e["transcript"] for e in after]
    assert len(set(texts)) == len(texts) > len(before)  # only new sentences: the pool is not used up
    assert {e["transcript"] for e in before} <= set(texts)
    assert sum(e["original_duration"] for e in after) >= 2 * 0.01 * 3600 * 0.9


@pytest.mark.parametrize("voice", VOICES, ids=lambda v: f"{v.engine}-{v.name}")
def test_every_catalogue_voice_renders_speech_at_the_planned_tempo(voice: Voice, tmp_path: Path) -> None:
    """Each voice, when its engine is installed, follows the planned tempo: the rate option of every
    engine means the same thing (> 1 faster), and a renderer that ignored it would fail here."""
    if (why := synthetic.engine_missing(voice.engine)) is not None:
        pytest.skip(why)
    renderer = synthetic.RENDERERS[voice.engine]
    text = "the old man walked slowly along the river bank"
    slow, fast = (trim_padding(renderer(voice, text, speed, 1.0, 5, tmp_path)) for speed in (0.9, 1.1))
    assert 1.0 < slow.size / 16000 < 6.0 and 0.1 < np.abs(slow).max() < 1.5  # resampling may overshoot 1
    # 1.1 / 0.9 = 1.22 for an exact tempo change; the engines measured 1.20-1.26 here, except piper:
    # 1.08, its length_scale (1/speed) does not scale the whole utterance's length in proportion.
    low = 1.05 if voice.engine == "piper" else 1.15
    assert low < slow.size / fast.size < 1.35


def test_render_speed_is_reported_per_engine(tmp_path: Path) -> None:
    voice, other = Voice(901, "flite", "kal16"), Voice(902, "espeak", "en-us")
    utt = Utterance("train", 0, "hello", voice, 1000, 0, 1.0, 0.0, -3.0, 0.2, 0.3, -70.0, 5)
    summary = synthetic.Summary()
    summary.kept["train"] = [
        synthetic.Rendered(utt, info={"duration": 4.0}, seconds=0.5),
        synthetic.Rendered(utt, info={"duration": 2.0}, seconds=0.5),
        synthetic.Rendered(dataclasses.replace(utt, voice=other), info={"duration": 9.0}, cached=True),
    ]
    assert synthetic.render_speeds(summary) == {"flite": 6.0}  # cached utterances cost nothing
