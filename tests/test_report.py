"""The quickstart report's reading of the training log."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from jasper.quickstart import report
from jasper.training import metric_log


def test_curves_run_on_training_time_across_resumed_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped by Ctrl-C and resumed hours later appends to the same log: the curves' clock is
    the logged training time, so the second run continues where the first stopped, not 3 h later.
    A record without `train_seconds` (a log written before it was logged) gives no curve point but
    still counts towards the throughput."""
    clock = [1000.0]
    monkeypatch.setattr(metric_log, "time", SimpleNamespace(time=lambda: clock[0]))
    nvlog = tmp_path / "nvlog.json"
    old = {"train_loss": 999.0, "train_audio_rate": 100.0, "train_took": 1.0, "train_wait": 0.5}
    nvlog.write_text(f'DLLL {{"type": "LOG", "elapsedtime": 5.0, "step": [1], "data": {json.dumps(old)}}}\n')

    def run(start: float, trained: float, loss: float, wer: float) -> None:
        clock[0] = start
        log = metric_log.MetricLogger(nvlog, tmp_path / "tb", ("train", "dev"), enabled=True)
        log.parameters({"command": "train"})
        clock[0] = start + 60.0  # wall time includes start-up, which is not training
        log.log(
            (1, 1, 10), 1, trained + 10.0, {"train_loss": loss, "train_audio_rate": 300.0, "train_took": 1.0}
        )
        clock[0] = start + 90.0
        log.log((1, 1, 10), 1, trained + 20.0, {"dev_wer": wer, "dev_cer": wer / 2})
        log.close()

    run(1000.0, 0.0, loss=300.0, wer=90.0)
    run(1000.0 + 3 * 3600, 20.0, loss=100.0, wer=60.0)  # resumed three hours later

    losses, dev, throughput = report.training_curves(nvlog)
    assert losses == [pytest.approx((10.0, 300.0)), pytest.approx((30.0, 100.0))]
    assert dev == [pytest.approx((20.0, 90.0, 45.0)), pytest.approx((40.0, 60.0, 30.0))]
    assert throughput["logged_steps"] == 3 and throughput["audio_seconds_per_second"] == pytest.approx(
        700 / 3
    )
    assert throughput["loader_wait_per_step_ms"] == pytest.approx(500 / 3)


def test_kokoro_packs_and_blends_are_scored_as_groups_of_their_own() -> None:
    voices = {
        "201": {"engine": "flite", "voice": "rms", "split": "test"},
        "509": {"engine": "kokoro", "voice": "af_nova", "split": "test"},
        "510": {"engine": "kokoro", "voice": "af_sky", "split": "test"},
        "7000": {"engine": "kokoro", "voice": "af_nova*0.40+af_sky*0.60", "split": "test"},
        "7001": {"engine": "kokoro", "voice": "af_sky*0.50+bm_lewis*0.50", "split": "test"},
        "7002": {"engine": "kokoro", "voice": "am_echo*0.30+bm_lewis*0.70", "split": "test"},
        "6000": {"engine": "kokoro", "voice": "af_heart*0.50+am_adam*0.50", "split": "train"},
    }
    uids = ("201-3000-0001", "509-3000-0002", "7001-3000-0003")
    groups = [report.speaker_group(uid, voices) for uid in uids]
    assert groups == ["flite", "kokoro pack", "kokoro blend"]
    assert report.speaker_group("999-3000-0000", voices) == "?"
    assert report.held_out_voices(voices) == "flite rms, kokoro (2 voices and 3 blends of them)"
