"""Tests for jasper.datasets.prepare on real LibriSpeech FLACs (the shared mini set, read in place).

Checks the manifest format of the reference (spec 2.1), bit-exact WAVs, speed-perturbed copies,
re-runs that skip finished files, bad inputs reported by path, and the shell wrapper's SPEEDS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, require_shared

from jasper.cli import main
from jasper.datasets import prepare

COUNTS = {"test-clean": 5, "dev-clean": 10, "test-other": 21}
ENTRY_KEYS = ["transcript", "files", "original_duration", "original_num_samples"]
FILE_KEYS = [
    "channels",
    "sample_rate",
    "bitdepth",
    "bitrate",
    "duration",
    "num_samples",
    "encoding",
    "silent",
    "fname",
    "speed",
]


def mini(*parts: str) -> Path:
    return require_shared("data", "librispeech-real-mini", *parts)


def run_prepare(*argv: object) -> int:
    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    return prepare.run(parser.parse_args([str(a) for a in argv]))


def transcripts(subset_dir: Path) -> dict[str, str]:
    lines = (
        line.split(" ", 1) for t in subset_dir.rglob("*.trans.txt") for line in t.read_text().splitlines()
    )
    return {uid: text for uid, text in lines}


@pytest.mark.parametrize("subset", list(COUNTS))
def test_manifest_and_bit_exact_wavs(tmp_path: Path, subset: str) -> None:
    source = mini(subset)
    argv = ["--input_dir", source, "--dest_dir", tmp_path / f"{subset}-wav", "--parallel", 2]
    if subset == "test-clean":  # once through the real entry point
        assert main(["data", "prepare", *map(str, argv)]) == 0
    else:
        assert run_prepare(*argv) == 0
    entries = json.loads((tmp_path / f"librispeech-{subset}-wav.json").read_text())
    expected = transcripts(source)
    assert len(entries) == COUNTS[subset] == len(expected)
    ids = []
    for entry in entries:
        assert list(entry) == ENTRY_KEYS
        (f,) = entry["files"]
        assert list(f) == FILE_KEYS
        uid = Path(f["fname"]).stem
        ids.append(uid)
        spk, chap, _ = uid.split("-")
        assert f["fname"] == f"{subset}-wav/{spk}/{chap}/{uid}.wav"
        assert entry["transcript"] == expected[uid].strip().lower()
        assert f["speed"] == 1 and isinstance(f["speed"], int)
        assert (f["channels"], f["sample_rate"], f["bitdepth"], f["bitrate"]) == (1, 16000.0, 16, 256000.0)
        assert isinstance(f["sample_rate"], float) and f["encoding"] == "Signed Integer PCM"
        assert f["silent"] is False
        wav, rate = sf.read(tmp_path / f["fname"], dtype="int16")
        flac, _ = sf.read(source / spk / chap / f"{uid}.flac", dtype="int16")
        assert rate == 16000 and np.array_equal(wav, flac)
        assert f["num_samples"] == entry["original_num_samples"] == len(flac)
        assert f["duration"] == entry["original_duration"] == pytest.approx(len(flac) / 16000)
    assert ids == sorted(ids)


def test_speeds_and_rerun(tmp_path: Path) -> None:
    dest = tmp_path / "test-clean-wav"
    manifest = tmp_path / "manifest.json"
    argv = [
        "--input_dir",
        mini("test-clean"),
        "--dest_dir",
        dest,
        "--output_json",
        manifest,
        "-s",
        0.9,
        1.1,
        "--parallel",
        2,
    ]
    assert run_prepare(*argv) == 0
    entries = json.loads(manifest.read_text())
    for entry in entries:
        assert [f["speed"] for f in entry["files"]] == [0.9, 1.1, 1]
        uid = Path(entry["files"][-1]["fname"]).stem
        assert [Path(f["fname"]).name for f in entry["files"]] == [
            f"{uid}-0.9.wav",
            f"{uid}-1.1.wav",
            f"{uid}.wav",
        ]
        for f in entry["files"][:2]:
            assert f["duration"] == pytest.approx(entry["original_duration"] / f["speed"], rel=0.01)
            assert f["num_samples"] == sf.info(tmp_path / f["fname"]).frames

    wavs = sorted(dest.rglob("*.wav"))
    assert len(wavs) == 15
    mtimes = [w.stat().st_mtime_ns for w in wavs]
    before = manifest.read_text()
    assert run_prepare(*argv) == 0  # everything is there: nothing rewritten, same manifest
    assert [w.stat().st_mtime_ns for w in wavs] == mtimes
    assert manifest.read_text() == before

    os.utime(wavs[0], ns=(0, 0))
    assert run_prepare(*argv, "--overwrite") == 0
    assert wavs[0].stat().st_mtime_ns > 0


def test_bad_inputs_are_reported_and_the_rest_converted(tmp_path: Path, capsys) -> None:
    chapter = tmp_path / "in" / "1988" / "24833"
    shutil.copytree(mini("dev-clean", "1988", "24833"), chapter)
    garbage, truncated, missing = (chapter / f"1988-24833-000{i}.flac" for i in (1, 2, 3))
    garbage.write_bytes(b"not a flac" * 100)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    missing.unlink()
    trans = chapter / "1988-24833.trans.txt"
    trans.write_text(trans.read_text() + "1988-24833-0009\n")  # 5th line: an id without transcript

    manifest = tmp_path / "out.json"
    rc = run_prepare(
        "--input_dir",
        tmp_path / "in",
        "--dest_dir",
        tmp_path / "wav",
        "--output_json",
        manifest,
        "--parallel",
        2,
    )
    assert rc == 3  # finished, with skipped inputs (jasper.faults.SKIPPED_EXIT)
    err = capsys.readouterr().err
    assert "1 utterances done, 4 skipped" in err
    for path in (garbage, truncated, missing):
        assert str(path) in err
    assert f"{missing}: no such audio file (listed at {trans}:4)" in err
    assert f"{trans}:5: no transcript" in err
    entries = json.loads(manifest.read_text())
    assert [e["files"][0]["fname"] for e in entries] == ["wav/1988/24833/1988-24833-0000.wav"]

    strict = tmp_path / "strict.json"
    args = ["--input_dir", tmp_path / "in", "--dest_dir", tmp_path / "wav2", "--output_json", strict]
    assert main(["data", "prepare", *map(str, args), "--parallel", "1", "--strict"]) == 2
    assert f"{trans}:5: no transcript" in capsys.readouterr().err
    assert not strict.exists()


def test_shell_script_applies_speeds_to_train_subsets(tmp_path: Path) -> None:
    data = tmp_path / "LibriSpeech"
    shutil.copytree(mini("test-clean", "1089", "134691"), data / "train-clean-100" / "1089" / "134691")
    shutil.copytree(mini("dev-clean", "3752", "4944"), data / "dev-clean" / "3752" / "4944")
    script = ["bash", str(REPO / "scripts" / "preprocess_librispeech.sh")]
    env = {**os.environ, "DATA_DIR": str(data), "SPEEDS": "0.9 1.1"}

    def speeds(subset: str) -> list[list[float]]:
        entries = json.loads((data / f"librispeech-{subset}-wav.json").read_text())
        return [[f["speed"] for f in e["files"]] for e in entries]

    result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"skipping test-other: {data}/test-other does not exist" in result.stdout
    assert speeds("train-clean-100") == [[0.9, 1.1, 1]] * 2
    assert speeds("dev-clean") == [[1]] * 3
    assert (data / "train-clean-100-wav" / "1089" / "134691" / "1089-134691-0000-1.1.wav").is_file()

    # the reference's positional form still works and wins over the environment
    result = subprocess.run(
        [*script, "0.95"],
        env={**env, "SUBSETS": "train-clean-100"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert speeds("train-clean-100") == [[0.95, 1]] * 2
