"""The fault suite: bad audio, manifests, checkpoints, text and disks, each with its outcome asserted.

A batch tool given one bad input among good ones reports it (path and reason) on stderr, skips
it, finishes the others and exits 3; `--strict` stops at the first with exit 2. Inputs that are
unusual but valid (stereo, 44.1 kHz, 0.05 s) are transcribed. Kills during training and saves,
full disks and 64 concurrent clients are in tests/test_fault_soak.py (benchmarks/fault_soak.py
with 5 kills), malformed server requests in tests/test_triton.py.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import require_shared
from test_transcribe import TINY, write_checkpoint

from jasper.cli import main
from jasper.faults import SKIPPED_EXIT


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny checkpoint, one real clip, and a folder of it beside every kind of bad audio file."""
    root = require_shared("data", "librispeech-real-mini")
    tmp = tmp_path_factory.mktemp("faults")
    clip = sorted(root.rglob("*.flac"))[0]
    audio, rate = sf.read(str(clip), dtype="float32")
    folder = tmp / "folder"
    folder.mkdir()
    good = {
        "a_real.flac": clip.read_bytes(),
    }
    for name, body in good.items():
        (folder / name).write_bytes(body)
    sf.write(str(folder / "b_stereo_44k.wav"), np.stack([audio, audio], 1)[: rate * 2], 44100)
    sf.write(str(folder / "c_50ms.wav"), audio[: rate // 20], rate)
    bad = {
        "empty.flac": "unreadable audio",
        "truncated.wav": "unreadable audio",
        "random.wav": "unreadable audio",
        "nan.wav": "non-finite samples",
        "inf.wav": "non-finite samples",
    }
    (folder / "empty.flac").write_bytes(b"")
    sf.write(str(folder / "whole.wav"), audio, rate)
    (folder / "truncated.wav").write_bytes((folder / "whole.wav").read_bytes()[:30])
    (folder / "whole.wav").unlink()
    (folder / "random.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    for name, value in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        samples = audio[:rate].copy()
        samples[100] = value
        sf.write(str(folder / name), samples, rate, subtype="FLOAT")
    (folder / "x.wav").mkdir()  # a directory with an audio suffix: not a file, never read
    return {"tmp": tmp, "clip": clip, "folder": folder, "bad": bad, "ckpt": write_checkpoint(tmp / "t.pt")}


def test_transcribe_skips_each_bad_file_and_finishes_the_rest(
    kit: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["transcribe", str(kit["folder"]), "--ckpt", str(kit["ckpt"])]) == SKIPPED_EXIT
    out, err = capsys.readouterr()
    done = [line.split("\t")[0] for line in out.splitlines()]
    assert [Path(p).name for p in done] == ["a_real.flac", "b_stereo_44k.wav", "c_50ms.wav"]
    for name, reason in kit["bad"].items():
        assert f"skipped {kit['folder'] / name}: {reason}" in err, name
    assert "3 files done, 5 skipped (unreadable audio: 3, non-finite samples: 2)" in err


def test_transcribe_strict_stops_at_the_first_bad_file(kit: dict, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["transcribe", str(kit["folder"]), "--ckpt", str(kit["ckpt"]), "--strict"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "empty.flac" in err and "skipped" not in err


def test_explicit_directory_and_missing_path_are_skipped(
    kit: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = kit["tmp"] / "nope.wav"
    args = [
        "transcribe",
        str(kit["folder"] / "x.wav"),
        str(missing),
        str(kit["clip"]),
        "--ckpt",
        str(kit["ckpt"]),
    ]
    assert main(args) == SKIPPED_EXIT
    out, err = capsys.readouterr()
    assert out.startswith(str(kit["clip"]))
    assert f"skipped {kit['folder'] / 'x.wav'}: no audio files" in err
    assert f"skipped {missing}: no such file or directory" in err


def test_one_hour_recording_is_transcribed(kit: dict, capsys: pytest.CaptureFixture[str]) -> None:
    audio, rate = sf.read(str(kit["clip"]), dtype="float32")
    hour = kit["tmp"] / "hour.flac"
    sf.write(str(hour), np.tile(audio, 3600 * rate // audio.size + 1)[: 3600 * rate], rate)
    assert main(["transcribe", str(hour), "--ckpt", str(kit["ckpt"]), "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["duration"] == pytest.approx(3600.0) and result["words"][-1]["end"] <= 3600.0


def test_infer_manifest_skips_missing_and_unreadable_files(
    kit: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"audio_filepath": str(kit["clip"]), "duration": 3.0, "text": "one"},
        {"audio_filepath": str(kit["folder"] / "random.wav"), "duration": 1.0, "text": "two"},
        {"audio_filepath": str(tmp_path / "gone.wav"), "duration": 1.0, "text": "three"},
        {"audio_filepath": str(kit["clip"]), "duration": 3.0, "text": "one again, the same id"},
    ]
    manifest = tmp_path / "m.json"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds = tmp_path / "preds.txt"
    args = ["infer", "--model_config", str(TINY), "--ckpt", str(kit["ckpt"]), "--cpu", "-o", str(tmp_path)]
    args += ["--val_manifests", str(manifest), "--workers", "0", "--save_predictions", str(preds)]
    assert main(args) == SKIPPED_EXIT
    err = capsys.readouterr().err
    assert "random.wav: unreadable audio" in err and "gone.wav does not exist" in err
    assert "2 utterances done, 2 skipped" in err
    ids = [line.split("\t")[0] for line in preds.read_text().splitlines()]
    assert len(ids) == 2 and len(set(ids)) == 2  # duplicate ids made unique


@pytest.mark.parametrize(
    "body, message",
    [
        (
            '{"audio_filepath": "a.wav", "duration": 1, "text": "x"}\n{"audio_filepath": \n',
            "m.json:2: invalid JSON",
        ),
        ('{"audio_filepath": "a.wav", "text": "x"}\n', "missing field 'duration'"),
        ('{"audio_filepath": "../../etc/passwd", "duration": 1, "text": "x"}\n', "escapes the dataset dir"),
    ],
    ids=["invalid JSON on line 2", "missing field", "path escaping the data dir"],
)
def test_broken_manifest_is_one_error_naming_file_and_line(
    kit: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(body)
    (tmp_path / "a.wav").write_bytes(b"")
    args = ["infer", "--model_config", str(TINY), "--ckpt", str(kit["ckpt"]), "--cpu", "-o", str(tmp_path)]
    args += ["--val_manifests", str(manifest), "--dataset_dir", str(tmp_path), "--workers", "0", "--strict"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_characters_outside_the_labels_are_spelled_or_dropped(kit: dict, tmp_path: Path) -> None:
    from jasper import config
    from jasper.data import load_utterances
    from jasper.text import Tokenizer

    cfg = config.load(TINY)
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps({"audio_filepath": str(kit["clip"]), "duration": 3.0, "text": "naïve café ☃"})
    )
    utts, stats = load_utterances(
        [manifest], tmp_path, Tokenizer(cfg["labels"]), config.section(cfg, "input_val", "audio_dataset")
    )
    assert utts[0].text == "naive cafe" and stats.kept == 1  # accents spelled out, the snowman dropped


def test_bad_checkpoints_are_one_line_errors(
    kit: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(kit["ckpt"].read_bytes()[: kit["ckpt"].stat().st_size // 2])

    class Exploit:
        def __reduce__(self):  # unpickling would run this command
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": {}, "payload": Exploit()}))
    other = tmp_path / "other.pt"
    state = torch.load(kit["ckpt"], weights_only=True)
    state["state_dict"]["decoder.layers.0.weight"] = torch.zeros(5, 7, 1)
    torch.save(state, other)
    for path, message in ((truncated, str(truncated)), (evil, "evil.pt"), (other, "decoder.layers.0.weight")):
        assert main(["transcribe", str(kit["clip"]), "--ckpt", str(path)]) == 2, path
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "pwned").exists(), "the pickled code ran"


def test_lm_build_skips_missing_and_binary_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jasper.lm.ngram import LMError
    from jasper.lm.tool import find_tool

    try:
        find_tool("lmplz")
    except LMError as e:
        pytest.skip(str(e))
    good = tmp_path / "good.txt"
    good.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\xff\xfe garbage\n" * 5 + b"a fine line\n")
    missing = tmp_path / "missing.txt"
    args = [
        "lm",
        "build",
        "--text",
        str(good),
        str(binary),
        str(missing),
        "--order",
        "2",
        "--out",
        str(tmp_path / "lm"),
    ]
    assert main(args) == SKIPPED_EXIT
    err = capsys.readouterr().err
    assert f"skipped {missing}: no such text file" in err
    assert f"skipped {binary}: not text (5 of 6 lines" in err
    assert (tmp_path / "lm" / "lm.arpa").is_file()
    assert main([*args, "--strict"]) == 2
