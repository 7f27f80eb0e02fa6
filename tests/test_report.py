"""The quickstart report's reading of the training log."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from jasper import report, train


def test_curves_leave_out_the_time_between_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped by Ctrl-C and resumed hours later appends to the same log: the curves' clock
    counts training time only, so the second run continues where the first stopped."""
    clock = [1000.0]
    monkeypatch.setattr(train, "time", SimpleNamespace(time=lambda: clock[0]))
    nvlog = tmp_path / "nvlog.json"

    def run(start: float, loss_at: float, dev_at: float, loss: float, wer: float) -> None:
        clock[0] = start
        log = train.MetricLogger(nvlog, tmp_path / "tb", ("train", "dev"), enabled=True)
        log.parameters({"command": "train"})
        clock[0] = start + loss_at
        log.log((1, 1, 10), 1, {"train_loss": loss})
        clock[0] = start + dev_at
        log.log((1, 1, 10), 1, {"dev_wer": wer, "dev_cer": wer / 2})
        log.close()

    run(1000.0, 10.0, 20.0, loss=300.0, wer=90.0)
    run(1000.0 + 3 * 3600, 5.0, 15.0, loss=100.0, wer=60.0)  # resumed three hours later

    losses, dev, _ = report.training_curves(nvlog)
    assert losses == [pytest.approx((10.0, 300.0)), pytest.approx((25.0, 100.0))]
    assert dev == [pytest.approx((20.0, 90.0, 45.0)), pytest.approx((35.0, 60.0, 30.0))]
