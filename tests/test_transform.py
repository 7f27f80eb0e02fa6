"""Tests for jasper.datasets.transform: each lever's effect on signals whose answer is known, the
per-utterance seeding, and `jasper data transform` end to end on a small corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jasper import audio
from jasper.cli import main
from jasper.data import flac_info
from jasper.datasets import transform as T

pytestmark = pytest.mark.skipif(T.missing() is not None, reason=f"{T.missing()}")
RATE = T.SAMPLE_RATE


def vowel(
    f0: float, seconds: float = 1.0, formants: tuple[float, ...] = (700.0, 1200.0, 2600.0)
) -> np.ndarray:
    """A voiced vowel: harmonics of `f0` shaped by resonances at `formants` (Hz)."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = np.zeros_like(t)
    for k in range(1, int(7000 / f0)):
        gain = sum(1.0 / (1.0 + ((k * f0 - f) / 120.0) ** 2) for f in formants)
        x += gain * np.sin(2 * np.pi * k * f0 * t)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def median_f0(x: np.ndarray) -> float:
    import pyworld

    f0, _ = pyworld.dio(x.astype(np.float64), RATE, frame_period=5.0)
    return float(np.median(f0[f0 > 0]))


def test_envelope_warp_moves_a_peak_by_the_factor_and_one_is_the_identity() -> None:
    bins = np.arange(513, dtype=float)
    envelope = np.exp(-(((bins - 100) / 5) ** 2))[None, :] + 1e-6
    assert np.allclose(T.warp_envelope(envelope, 1.0), envelope)
    assert int(np.argmax(T.warp_envelope(envelope, 1.15)[0])) == 115
    assert int(np.argmax(T.warp_envelope(envelope, 0.9)[0])) == 90


def test_world_voice_shifts_the_pitch_by_the_semitones_asked_and_keeps_the_length() -> None:
    x = vowel(120.0)
    up = T.world_voice(x, 12.0, 1.0, 1.0)
    down = T.world_voice(x, -5.0, 1.0, 1.0)
    assert up.shape == x.shape and up.dtype == np.float32
    assert median_f0(up) == pytest.approx(240.0, rel=0.05)
    assert median_f0(down) == pytest.approx(120.0 * 2 ** (-5 / 12), rel=0.05)


def test_world_voice_warp_moves_the_formants_not_the_pitch() -> None:
    x = vowel(110.0, formants=(1000.0,))
    warped = T.world_voice(x, 0.0, 1.0, 1.15)
    assert median_f0(warped) == pytest.approx(110.0, rel=0.05)
    spectrum = np.abs(np.fft.rfft(warped[RATE // 4 : 3 * RATE // 4]))
    freqs = np.fft.rfftfreq(RATE // 2, 1 / RATE)
    assert freqs[np.argmax(spectrum)] == pytest.approx(1150.0, abs=70.0)


def test_reverberation_with_a_single_direct_path_is_the_input() -> None:
    x = vowel(150.0, 0.5)
    rir = np.zeros(400)
    rir[37] = 0.4  # the direct sound: aligned away and levelled back to the input's peak
    assert np.allclose(T.reverberate(x, rir), x, atol=1e-6)


def test_a_room_smears_the_signal_in_time() -> None:
    rir = T.room_response(np.random.default_rng(3))
    assert rir.size > 0.05 * RATE and np.isfinite(rir).all()
    click = np.zeros(RATE, dtype=np.float32)
    click[1000] = 0.5
    wet = T.reverberate(click, rir)
    assert np.count_nonzero(np.abs(wet) > 1e-3) > 100  # one sample became a decaying tail


def test_coloured_noise_has_unit_rms_and_the_asked_slope() -> None:
    rng = np.random.default_rng(0)
    for slope in (0.0, 1.0, 2.0):
        noise = T.coloured_noise(2**16, slope, rng)
        assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0)
        power = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(noise.size)
        band = (freqs > 0.01) & (freqs < 0.4)
        fitted = np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0]
        assert fitted == pytest.approx(-slope, abs=0.1)


def test_channel_adds_noise_at_the_drawn_snr_range_and_keeps_level_and_length() -> None:
    x = vowel(130.0)
    for seed in range(5):
        y = T.channel(x, np.random.default_rng(seed))
        assert y.shape == x.shape and np.isfinite(y).all()
        assert np.abs(y).max() == pytest.approx(np.abs(x).max(), rel=1e-5)
        assert not np.allclose(y, x, atol=1e-3)


def test_phone_line_removes_everything_above_4_khz() -> None:
    t = np.arange(RATE) / RATE
    x = (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    y = T.mu_law_phone(x)
    spectrum = np.abs(np.fft.rfft(y))
    assert spectrum[6000] < 0.01 * spectrum[1000]


def test_a_transform_is_a_function_of_seed_and_utterance_id() -> None:
    x = vowel(140.0)
    levers = T.LEVERS
    a = T.transform(x, levers, T.utterance_rng(1, "101-1000-0001"))
    b = T.transform(x, levers, T.utterance_rng(1, "101-1000-0001"))
    c = T.transform(x, levers, T.utterance_rng(1, "101-1000-0002"))
    d = T.transform(x, levers, T.utterance_rng(2, "101-1000-0001"))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c, atol=1e-3) and not np.allclose(a, d, atol=1e-3)


def test_a_levers_draw_is_the_same_alone_and_combined() -> None:
    """The channel lever alone gives the same output as world+channel with world made a no-op."""
    x = vowel(140.0)
    alone = T.transform(x, ["channel"], T.utterance_rng(5, "u"))
    rng = T.utterance_rng(5, "u")
    rng.uniform(size=4)  # the world and room draws that `transform` makes before the channel's
    channel_rng = np.random.default_rng(rng.integers(2**63, size=2)[1])
    assert np.array_equal(alone, T.channel(x, channel_rng))


# ---------------------------------------------------------------------------------------------
# `jasper data transform` end to end


def write_corpus(root: Path) -> None:
    """A corpus in `jasper data synth`'s layout: 4 train, 1 dev and 1 test utterance of vowels."""
    splits = {"train": [(101, 1000, i) for i in range(4)], "dev": [(101, 2000, 0)], "test": [(109, 3000, 0)]}
    voices = {
        "seed": 1,
        "sentences_sha256": "x",
        "voices": {"101": {"split": "train"}, "109": {"split": "test"}},
    }
    (root / "voices.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "voices.json").write_text(json.dumps(voices), encoding="utf-8")
    for split, ids in splits.items():
        entries = []
        for k, (speaker, chapter, n) in enumerate(ids):
            uid = f"{speaker}-{chapter}-{n:04d}"
            fname = f"{split}/{speaker}/{chapter}/{uid}.flac"
            audio.write(root / fname, vowel(100.0 + 20 * k, 0.6 + 0.1 * k))
            trans = root / split / str(speaker) / str(chapter) / f"{speaker}-{chapter}.trans.txt"
            with trans.open("a", encoding="utf-8") as f:
                f.write(f"{uid} A VOWEL\n")
            info = flac_info(root / fname)
            entries.append(
                {
                    "transcript": "a vowel",
                    "files": [{**info, "fname": fname, "speed": 1}],
                    "original_duration": info["duration"],
                    "original_num_samples": info["num_samples"],
                }
            )
        (root / f"synth-{split}.json").write_text(json.dumps(entries), encoding="utf-8")


def manifest(root: Path, split: str) -> list[dict]:
    return json.loads((root / f"synth-{split}.json").read_text(encoding="utf-8"))


def test_transform_command_changes_train_only_and_reruns_from_its_cache(tmp_path: Path, capsys) -> None:
    source, out = tmp_path / "clean", tmp_path / "varied"
    write_corpus(source)
    args = ["data", "transform", "--source", str(source), "--out", str(out), "--workers", "2"]
    assert main(args) == 0
    assert "transformed" in capsys.readouterr().out
    for split in ("dev", "test"):
        assert manifest(out, split) == manifest(source, split)
        for entry in manifest(out, split):
            fname = entry["files"][0]["fname"]
            assert (out / fname).read_bytes() == (source / fname).read_bytes()
    train, clean = manifest(out, "train"), manifest(source, "train")
    assert [e["files"][0]["fname"] for e in train] == [e["files"][0]["fname"] for e in clean]
    for new, old in zip(train, clean, strict=True):
        fname = new["files"][0]["fname"]
        assert new["transcript"] == old["transcript"]
        assert new["original_num_samples"] == old["original_num_samples"]
        assert new["files"][0] == {**flac_info(out / fname), "fname": fname, "speed": 1}
        x, y = sf.read(source / fname)[0], sf.read(out / fname)[0]
        assert not np.allclose(x, y, atol=1e-2)
    assert sorted(p.relative_to(out) for p in out.rglob("*.trans.txt")) == sorted(
        p.relative_to(source) for p in source.rglob("*.trans.txt")
    )
    record = json.loads((out / "voices.json").read_text(encoding="utf-8"))
    assert record["transform"] == {"levers": list(T.LEVERS), "seed": 1, "source": str(source.resolve())}
    assert record["voices"] == json.loads((source / "voices.json").read_text(encoding="utf-8"))["voices"]

    first = {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")} == first
    assert "transformed 0.000 h" in capsys.readouterr().out


def test_same_seed_gives_the_same_bytes_for_any_workers(tmp_path: Path) -> None:
    source = tmp_path / "clean"
    write_corpus(source)
    for name, workers in (("a", "1"), ("b", "2")):
        assert (
            main(
                [
                    "data",
                    "transform",
                    "--source",
                    str(source),
                    "--out",
                    str(tmp_path / name),
                    "--workers",
                    workers,
                ]
            )
            == 0
        )
    for flac in (tmp_path / "a").rglob("*.flac"):
        assert flac.read_bytes() == (tmp_path / "b" / flac.relative_to(tmp_path / "a")).read_bytes()


def test_other_settings_in_the_same_out_are_refused(tmp_path: Path, capsys) -> None:
    source, out = tmp_path / "clean", tmp_path / "varied"
    write_corpus(source)
    base = ["data", "transform", "--source", str(source), "--out", str(out), "--workers", "1"]
    assert main([*base, "--levers", "channel"]) == 0
    assert main([*base, "--levers", "world"]) == 1
    assert "other settings" in capsys.readouterr().err
    assert main([*base, "--levers", "channel", "--seed", "2"]) == 1


def test_a_missing_source_is_named(tmp_path: Path, capsys) -> None:
    assert main(["data", "transform", "--source", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1
    assert "voices.json: not found" in capsys.readouterr().err


def test_a_bad_training_file_is_skipped_by_name_and_the_rest_kept(tmp_path: Path, capsys) -> None:
    source, out = tmp_path / "clean", tmp_path / "varied"
    write_corpus(source)
    bad = source / manifest(source, "train")[1]["files"][0]["fname"]
    bad.write_bytes(b"not audio")
    args = ["data", "transform", "--source", str(source), "--out", str(out), "--workers", "1"]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert f"skipped {bad}" in err and "3 utterances done, 1 skipped" in err
    assert len(manifest(out, "train")) == 3
    shutil.rmtree(out)
    assert main([*args, "--strict"]) == 2
