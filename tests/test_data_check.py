"""`jasper data check`: one planted defect of each kind is named and exits 3; a clean manifest exits 0;
`jasper train` warns with the manifest findings before its first step, and --strict stops on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, impossible_clip, shortest_mini_rows, write_manifest

from jasper import config
from jasper.cli import main
from jasper.datasets import check

TINY = str(REPO / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Clean rows over real clips, and one row per defect (absolute paths: NeMo manifests allow them)."""
    data, rows = shortest_mini_rows()
    tmp = tmp_path_factory.mktemp("check")
    clean = [{**r, "audio_filepath": str(data / r["audio_filepath"])} for r in rows[:4]]
    (tmp / "garbage.flac").write_bytes(b"not audio at all")
    sf.write(str(tmp / "empty.wav"), np.zeros(0, dtype=np.float32), 16000)
    sf.write(
        str(tmp / "nan.wav"), np.array([0.1, np.nan, 0.2] * 800, dtype=np.float32), 16000, subtype="FLOAT"
    )
    sf.write(str(tmp / "stereo44k.wav"), np.zeros((44100, 2), dtype=np.float32), 44100)
    copies = {}
    for name, row in (("outside", clean[3]), ("long", clean[1])):
        copies[name] = tmp / f"{name}.flac"
        shutil.copy(row["audio_filepath"], copies[name])
    long_clip = {
        **clean[1],
        "audio_filepath": str(copies["long"]),
        "duration": 20.0,
    }  # what the manifest says
    defects = {
        "unreadable audio": {"audio_filepath": str(tmp / "garbage.flac"), "duration": 1.0, "text": "hello"},
        "empty audio": {"audio_filepath": str(tmp / "empty.wav"), "duration": 1.0, "text": "hello"},
        "non-finite audio": {"audio_filepath": str(tmp / "nan.wav"), "duration": 0.15, "text": "a"},
        "empty transcript": {**clean[2], "audio_filepath": str(tmp / "stereo44k.wav"), "text": "?!"},
        "outside labels": {
            **clean[3],
            "audio_filepath": str(copies["outside"]),
            "text": "naïve is fine but жук is not",
        },
        "too short for CTC": impossible_clip(data, rows, tmp),
        "duplicate": clean[0],
        "bad entry": {"audio_filepath": str(tmp / "x.wav"), "text": "no duration"},
        "over max_duration": long_clip,
    }
    return SimpleNamespace(
        data=str(data),
        tmp=tmp,
        clean=write_manifest(tmp / "clean.json", clean),
        dirty=write_manifest(tmp / "dirty.json", [*clean, *defects.values()]),
        defects=defects,
        lines={kind: f"dirty.json:{len(clean) + i + 1}" for i, kind in enumerate(defects)},
    )


def test_every_planted_defect_is_named_and_the_exit_code_is_3(
    planted: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "check", "--model_config", TINY, "--all", planted.dirty]) == 3
    out = capsys.readouterr().out
    report = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    for kind in check.BLOCKING + check.REPORTED:
        first = kind.split()[0]
        assert report[first].split()[len(kind.split())] == "1", (kind, report.get(first))
    for kind, where in planted.lines.items():
        if kind in ("unreadable audio", "empty audio", "non-finite audio"):
            where = planted.defects[kind]["audio_filepath"]  # the audio pass names the file
        assert any(where in line and line.startswith("    ") for line in out.splitlines()), (kind, where)
    assert "'ж' x1" in out and "'ï'" not in out  # ï has a base letter; ж is lost
    assert "1 files at 44100 Hz, 2 channel(s): resampled to 16000 Hz, down-mixed to mono" in out
    assert "20.0 s > 16.7 s: dropped" in out


def test_over_long_utterances_alone_do_not_fail_and_a_clean_manifest_passes(
    planted: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "check", "--model_config", TINY, planted.clean]) == 0
    rows = [json.loads(line) for line in Path(planted.clean).read_text().splitlines()]
    long_only = write_manifest(planted.tmp / "long.json", [*rows[:2], {**rows[2], "duration": 30.0}])
    assert main(["data", "check", "--model_config", TINY, "--no_audio", long_only]) == 0
    out = capsys.readouterr().out
    assert "over max_duration          1  reported" in out and "(audio not decoded" in out


def test_train_warns_before_the_first_step_and_strict_stops(
    planted: SimpleNamespace,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [json.loads(line) for line in Path(planted.clean).read_text().splitlines()]
    odd = write_manifest(tmp_path / "odd.json", [*rows, {**rows[0], "text": "жук"}, rows[1]])
    args = ["train", "--model_config", TINY, "--train_manifests", odd, "--val_manifests", planted.clean]
    args += ["--dataset_dir", planted.data, "--num_workers", "0", "--batch_size", "2", "--epochs", "1"]
    args += ["--threads", "1", "--eval_frequency", "1000", "--prediction_frequency", "1000"]
    with caplog.at_level("INFO"):
        assert main([*args, "--output_dir", str(tmp_path / "warn")]) == 0
    messages = [r.getMessage() for r in caplog.records]
    warned = next(i for i, m in enumerate(messages) if m.startswith("manifest check ("))
    first_step = next(i for i, m in enumerate(messages) if m.startswith("world size"))
    assert warned < first_step
    # two repeats in train, and the four dev utterances are training ones too
    assert "6 duplicate, 1 outside labels, 1 empty transcript" in messages[warned]
    assert main([*args, "--output_dir", str(tmp_path / "strict"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "--strict: the manifests have 8 finding(s)" in err and "odd.json:5: duplicate: path" in err
    assert not (tmp_path / "strict" / "nvlog.json").exists()


def test_ctc_output_frames_follow_the_model() -> None:
    """jasper5x3_cpu: 10 ms hop, one stride-2 conv: 1 s -> 100 frames -> 50 output frames."""
    spec = check.ModelSpec.from_config(config.load(REPO / "configs" / "jasper5x3_cpu.yaml"))
    assert spec.hop == 160 and [s for _, s, _ in spec.convs] == [2]
    assert spec.output_frames(1.0) == 50 and spec.output_frames(1.005) == 51
    assert check.ModelSpec.from_config(config.load(TINY)).output_frames(1.0) > 0
