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


def test_help_and_the_package_import_only_what_they_need() -> None:
    """`jasper --help` and `import jasper` load no sub-package and no torch; the package's lazy
    re-export (`from jasper import pipeline`) still works, and loads the inference pipeline."""
    probe = (
        "import sys, jasper, jasper.cli\n"
        "try:\n    jasper.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "subs = {'datasets', 'lm', 'training', 'inference', 'serving', 'quickstart'}\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m == 'torch' or m.startswith('jasper.') and m.split('.')[1] in subs)\n"
        "print('before', heavy)\n"
        "from jasper import pipeline\n"
        "print('after', pipeline.__name__, 'jasper.inference.pipeline' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "before []" in out
    assert "after jasper.inference.pipeline True" in out
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import jasper

        _ = jasper.nothing


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
