"""The `jasper` console script: help for every command, model-info's figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jasper.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
LEAVES = [
    [name, *([step] if step else [])]
    for name, entry in COMMANDS.items()
    for step in (entry if isinstance(entry, dict) else [None])
]


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jasper.cli", "--help"], capture_output=True, text=True, check=True
    )
    for name in COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("words", LEAVES, ids=" ".join)
def test_every_command_has_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*words, "--help"])
    assert e.value.code == 0
    assert "usage: jasper" in capsys.readouterr().out


def test_model_info_reference_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model-info", str(REPO / "configs" / "jasper10x5dr_speedp-online_speca.yaml")]) == 0
    out = capsys.readouterr().out
    assert "332,632,349" in out and "1763 feature frames" in out and "50 frames/s out" in out


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "labels: [a]\n"
        "jasper: {encoder: {in_feats: 64, activation: relu, blocks: []}, decoder: {in_feats: 1}}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "jasper.cli", "model-info", str(bad)], capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "bad.yaml: jasper.encoder.blocks: at least one block" in out.stderr
    assert "Traceback" not in out.stderr
