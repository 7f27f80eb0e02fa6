"""scripts/train_stability.sh: seeds trained through train.sh, evaluated through inference.sh, and the
per-dataset Seed/Mean/Std table built from those evaluations."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, shortest_mini_rows, write_manifest

from jasper import checkpoint
from jasper.training.stability import markdown, table


def test_table_mean_and_sample_std() -> None:
    rows = table({"dev": {1: 10.0, 2: 12.0, 3: 14.0}, "test": {1: 20.0}}, [1, 2, 3])
    assert rows[0]["mean"] == 12.0 and rows[0]["std"] == pytest.approx(2.0)
    assert rows[1]["wer"] == {"1": 20.0, "2": None, "3": None} and rows[1]["std"] is None
    text = markdown(rows, [1, 2, 3]).splitlines()
    assert text[0] == "| WER (%) | Seed #1 | Seed #2 | Seed #3 | Mean | Std |"
    assert text[2] == "| dev | 10.00 | 12.00 | 14.00 | 12.00 | 2.00 |"
    assert text[3] == "| test | 20.00 | - | - | 20.00 | - |"


@pytest.mark.slow
def test_two_seeds_train_evaluate_and_tabulate(tmp_path: Path) -> None:
    data, rows = shortest_mini_rows()
    for name, part in (("train", rows[:4]), ("a", rows[4:6]), ("b", rows[6:9])):
        write_manifest(tmp_path / f"{name}.json", part)
    out = tmp_path / "stability"
    env = os.environ | {
        "NUM_SEEDS": "2",
        "OUTPUT_DIR": str(out),
        "DATA_DIR": str(data),
        "MODEL_CONFIG": str(REPO / "configs" / "tiny.yaml"),
        "TRAIN_MANIFESTS": str(tmp_path / "train.json"),
        "VAL_MANIFESTS": str(tmp_path / "a.json"),
        "DATASETS": f"a={tmp_path / 'a.json'} b={tmp_path / 'b.json'}",
        "EPOCHS": "1",
        "BATCH_SIZE": "2",
        "GRAD_ACCUMULATION_STEPS": "1",
        "EMA": "0.9",
        "NUM_GPUS": "1",
        "CPU": "true",
        "OMP_NUM_THREADS": "1",
        "EXTRA_ARGS": "--num_workers 0",
    }
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "train_stability.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for seed in (1, 2):
        assert checkpoint.read(out / f"seed{seed}" / "Jasper_epoch1_checkpoint.pt")["args"]["seed"] == seed
    report = json.loads((out / "stability.json").read_text())
    assert [r["dataset"] for r in report["rows"]] == ["a", "b"]
    for row in report["rows"]:
        wers = []
        for seed in (1, 2):
            log = out / f"seed{seed}" / "eval" / f"{row['dataset']}.json"
            record = next(json.loads(x) for x in log.read_text().splitlines() if '"eval"' in x)
            assert row["wer"][str(seed)] == record["eval_wer"]
            wers.append(record["eval_wer"])
        assert row["mean"] == pytest.approx(statistics.fmean(wers))
        assert row["std"] == pytest.approx(statistics.stdev(wers))
    assert "| WER (%) | Seed #1 | Seed #2 | Mean | Std |" in run.stdout
    assert run.stdout.strip().endswith((out / "stability.md").read_text().strip())
    assert (out / "stability.png").stat().st_size > 1000
