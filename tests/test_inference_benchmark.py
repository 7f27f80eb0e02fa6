"""Inference benchmark: true percentiles, the README table, JSON and PNG from the shell script."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import require_shared

from jasper import graphs
from jasper.cli import main
from jasper.inference.benchmark import Measurement, format_table, report
from jasper.inference.timing import LatencyStats, percentiles

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
ROW = re.compile(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|")


def test_percentiles_are_true_percentiles() -> None:
    values = [5, 1, 9, 3, 7, 2, 8, 6, 4, 10]
    # Linear interpolation between order statistics: position (n - 1) * q / 100 in the sorted data.
    assert percentiles(values) == pytest.approx({90: 9.1, 95: 9.55, 99: 9.91})
    assert percentiles(values, [50]) == {50: 5.5}
    rng = np.random.default_rng(0)
    data = rng.lognormal(size=501)
    got = percentiles(data, [90, 95, 99])
    assert got == pytest.approx(dict(zip([90, 95, 99], np.percentile(data, [90, 95, 99]), strict=True)))
    stats = LatencyStats.from_ms([1.0, 2.0, 3.0, 10.0])
    assert stats.mean == 4.0 and stats.p90 == pytest.approx(7.9) and stats.n == 4
    with pytest.raises(ValueError):
        percentiles([])


def test_table_has_speed_up_column_for_fp16() -> None:
    fp32 = Measurement("fp32", 1, 2.0, 208, dnn_ms=[10.0, 12.0], e2e_ms=[20.0, 22.0])
    fp16 = Measurement("fp16", 1, 2.0, 208, dnn_ms=[5.0, 6.0], e2e_ms=[15.0, 15.0])
    text = report([fp32, fp16])
    assert text.count("| BS | Duration (s) | 90% (ms) | 95% (ms) | 99% (ms) | Avg (ms) |") == 4
    assert "| 1 | 2 | 5.90 | 5.95 | 5.99 | 5.50 | 2.00x |" in text  # dnn: 11.0 / 5.5
    assert "| 1 | 2 | 15.00 | 15.00 | 15.00 | 15.00 | 1.40x |" in text  # e2e: 21.0 / 15.0
    assert "Speed-up" not in format_table([fp32], "dnn")


def test_script_prints_table_and_writes_json_and_png(tmp_path: Path) -> None:
    env = os.environ | {
        "BATCH_SIZE_SEQ": "1 2",
        "MAX_DURATION_SEQ": "2",
        "NUM_STEPS": "20",
        "MODEL_CONFIG": str(TINY),
        "OUTPUT_DIR": str(tmp_path),
        "CPU": "true",
        "THREADS": "1",  # a busy test machine makes 2-thread OpenMP steps erratic
    }
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "inference_benchmark.sh")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [ROW.match(line) for line in out.stdout.splitlines()]
    rows = [m for m in rows if m]
    assert [(m[1], m[2]) for m in rows] == [("1", "2"), ("2", "2")] * 2  # dnn table, then end-to-end table
    for m in rows:
        p90, p95, p99, avg = map(float, m.groups()[2:])
        assert 0 < p90 <= p95 <= p99 and avg > 0
    record = json.loads((tmp_path / "infer_benchmark.json").read_text())
    assert record["machine"]["threads"] >= 1 and record["machine"]["torch"]
    assert record["settings"]["steps"] == 20 and record["settings"]["warmup_steps"] == 3
    for r in record["results"]:
        assert r["feature_frames"] == 208 and len(r["dnn"]["raw_ms"]) == 20 == len(r["e2e"]["raw_ms"])
        assert r["dnn"]["p99"] == pytest.approx(np.percentile(r["dnn"]["raw_ms"], 99))
        assert r["e2e"]["mean"] >= r["dnn"]["mean"]
    assert (tmp_path / "infer_benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_manifest_input_is_padded_to_the_duration(tmp_path: Path) -> None:
    root = require_shared("data", "librispeech-real-mini")
    manifest = tmp_path / "m.json"
    files = sorted(root.rglob("*.flac"))[:6]
    manifest.write_text(
        "".join(
            json.dumps({"audio_filepath": str(f), "duration": sf.info(str(f)).duration, "text": "x"}) + "\n"
            for f in files
        )
    )
    args = [
        "infer-benchmark",
        "--model_config", str(TINY),
        "--val_manifests", str(manifest),
        "--batch_sizes", "2",
        "--durations", "7",
        "--steps", "2",
        "--warmup_steps", "1",
        "--device", "cpu",
        "-o", str(tmp_path),
    ]  # fmt: skip
    assert main(args) == 0
    [result] = json.loads((tmp_path / "infer_benchmark.json").read_text())["results"]
    assert result["feature_frames"] == 704 and result["batch_size"] == 2


def test_bf16_is_timed_from_the_fp32_weights_with_a_speed_up_column(tmp_path: Path) -> None:
    from jasper.cli import main

    args = ["infer-benchmark", "--model_config", str(TINY), "--device", "cpu", "--batch_sizes", "1"]
    args += ["--durations", "1", "--precisions", "bf16", "fp32", "--steps", "3", "--warmup_steps", "1"]
    assert main([*args, "--threads", "1", "--output_dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "infer_benchmark.json").read_text())
    assert [r["precision"] for r in record["results"]] == ["fp32", "bf16"]  # the baseline first
    assert all(r["dnn"]["mean"] > 0 for r in record["results"])


@pytest.mark.skipif(
    graphs.compiler_problem(torch.device("cpu")) is not None, reason="inductor cannot build CPU code here"
)
def test_compile_rows_beside_eager_with_speed_up_and_one_compile_per_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["infer-benchmark", "--model_config", str(TINY), "--device", "cpu", "--batch_sizes", "1", "2"]
    args += ["--durations", "1", "--precisions", "fp32", "--steps", "2", "--warmup_steps", "1", "--compile"]
    assert main([*args, "--threads", "1", "--output_dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "infer_benchmark.json").read_text())["results"]
    assert [(r["engine"], r["batch_size"]) for r in rows] == [
        ("torch", 1),
        ("torch", 2),
        ("compile", 1),
        ("compile", 2),
    ]
    assert [r["compiles"] for r in rows] == [0, 0, 1, 2]  # one more shape per row: no recompiles
    out = capsys.readouterr().out
    assert "torch.compile FP32 latency" in out and "Speed-up vs eager FP32" in out and "Graphs" in out
