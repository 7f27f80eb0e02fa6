"""benchmarks/fault_soak.py in CI: 5 SIGKILLs of `scripts/train.sh` (3 at random updates, 2 half-way
through a checkpoint save) each resumed with RESUME=true, full disks, bad input to the batch tools,
and 1000 requests from 64 concurrent clients to Triton; every row of its table must read 0 lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, require_shared


@pytest.mark.slow
def test_fault_soak_loses_nothing(tmp_path: Path) -> None:
    data = require_shared("data", "librispeech-real-mini")
    from jasper.lm.ngram import LMError
    from jasper.lm.tool import find_tool
    from jasper.serving.server import TritonError, TritonInstall

    args = ["--kills", "5", "--requests", "1000", "--data_dir", str(data), "--output_dir", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fault_soak.py"), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(run.stdout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = {r["fault"].split(" ")[0]: r for r in json.loads((tmp_path / "soak.json").read_text())}
    kills = rows["SIGKILL"]
    assert kills["tries"] == kills["survived"] == 5
    points = [d["kill"] for d in kills["details"]]
    assert sum(p.startswith("save:") for p in points) == 2 and len(set(points)) == 5
    assert any(d["resumed_from_update"] > 0 for d in kills["details"]), "some kill came after a checkpoint"
    assert rows["disk"]["tries"] == rows["disk"]["survived"] == 4
    batch = rows["bad"]
    tools = {d["tool"] for d in batch["details"]}
    try:
        find_tool("lmplz")
        assert "lm build" in tools
    except LMError:
        pass
    assert {"transcribe", "infer", "data prepare"} <= tools and batch["tries"] == batch["survived"]
    try:
        TritonInstall.find()
        serve = rows["1000"]
        assert serve["survived"] == 1 and serve["details"][0]["answered_as_expected"] == 1000
    except TritonError:
        pass
    assert all(r["data_lost"] == 0 and r["corrupt_checkpoints"] == 0 for r in rows.values())
