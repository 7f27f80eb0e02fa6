"""The quickstart in a reduced mode: real corpus, real training, real evaluation, and a report whose
figures equal those recomputed independently from the predictions files and manifests.

The suite runs it for 1.5 minutes on 15 minutes of TTS speech: enough to check the pipeline and
that the training loss falls, not that the model learns to spell. That is the Training issue's
learning test, `test_quickstart_learns_in_8_minutes` (marked `long`, left out of the default run
to keep the suite under 15 minutes; run it with `pytest -m long`): the 2.5 M-parameter CPU config,
trained through scripts/train.sh for 8 minutes on 54 minutes of TTS speech, must leave the blank
plateau (CER near 100%) well behind on the dev split. When it leaves the plateau is chaotic: the
LR follows wall time, and three 4-minute runs of the same code on the 2-core machine left it after
about 110, 150 and 220 s (dev CER 50.4%, 57.6% and 86.1% at 4 minutes). Eight minutes keep the
LR high for longer (2026-12-03: dev CER 50.6%); the WER still sits near 100% this early (one
wrong letter fails a word), so only the CER is tested."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest
from conftest import require_shared

from jasper import config
from jasper.quickstart.run import corpus_dir
from jasper.text import normalize

REPO = Path(__file__).resolve().parents[1]


def run_quickstart(tmp_path: Path, minutes: float, hours: float) -> tuple[list[str], Path, Path]:
    """Run `jasper quickstart` as a user would; returns its command, output dir and cache dir."""
    require_shared("data", "text", "sentences-public.txt")
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [sys.executable, "-m", "jasper.cli", "quickstart", "--minutes", str(minutes), "--hours", str(hours)]
    cmd += ["--output_dir", str(out), "--cache_dir", str(cache), "--threads", "2"]
    # train.sh variables left in the caller's shell must not reach the quickstart's training run
    leftovers = {"CHECKPOINT": str(tmp_path / "no-such-checkpoint.pt"), "EPOCHS_THIS_JOB": "1"}
    run = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **leftovers},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return cmd, out, cache


@pytest.mark.long
def test_quickstart_learns_in_8_minutes(tmp_path: Path) -> None:
    _, out, _ = run_quickstart(tmp_path, minutes=8, hours=1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["corpus"]["train"]["hours"] * 60 >= 20
    dev = summary["splits"]["synth-dev"]["greedy"]
    print(f"learning test: synth-dev WER {dev['wer']:.1f}%, CER {dev['cer']:.1f}% after 8 minutes")
    assert dev["cer"] < 80, dev


@pytest.mark.slow
def test_quickstart_reduced_mode(tmp_path: Path) -> None:
    cmd, out, cache = run_quickstart(tmp_path, minutes=1.5, hours=0.25)
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "training.png").stat().st_size > 1000 and (out / "wer.png").stat().st_size > 1000

    labels = config.load(REPO / "configs" / "jasper5x3_cpu.yaml")["labels"]
    test = summary["splits"]["synth-test"]
    manifest = json.loads((cache / "synth" / "synth-test.json").read_text())
    refs = {Path(e["files"][0]["fname"]).stem: normalize(e["transcript"], labels) for e in manifest}
    hyps = dict(line.split("\t", 1) for line in Path(test["predictions"]).read_text().splitlines())
    assert set(hyps) == set(refs)
    ids = sorted(refs)
    expected = 100 * jiwer.wer([refs[i] for i in ids], [" ".join(hyps[i].split()) for i in ids])
    assert test["greedy"]["wer"] == pytest.approx(expected, abs=1e-9)
    # the same figure is printed in the report's results table
    row = next(line for line in report.splitlines() if line.startswith("| synth-test |"))
    assert re.search(rf"\| {expected:.1f}% \|", row)
    assert "librispeech-real" in summary["splits"]
    # Kokoro is opt-in (--engines ... kokoro): the default corpus keeps the four fast engines
    assert "--engines espeak flite festival piper" in (out / "commands.sh").read_text()
    voices = json.loads((cache / "synth" / "voices.json").read_text())["voices"]
    assert voices and all(v["engine"] != "kokoro" for v in voices.values())
    assert summary["corpus"]["train"]["hours"] * 60 >= 10
    assert summary["training"]["audio_seconds_per_second"] > 0
    log_lines = (out / "train" / "nvlog.json").read_text().splitlines()
    records = [json.loads(line[5:]) for line in log_lines if line.startswith("DLLL ")]
    epoch_losses = [
        r["data"]["train_avg_loss"]
        for r in records
        if r["type"] == "LOG" and len(r["step"]) == 1 and "train_avg_loss" in r["data"]
    ]
    assert len(epoch_losses) >= 5 and epoch_losses[-1] < 0.8 * epoch_losses[0], epoch_losses
    # the error-rate-vs-minutes curve: kept checkpoints re-scored here, the last point is the final model
    curve = summary["curve"]
    assert len(curve) >= 2 and (out / "curve.png").stat().st_size > 1000
    assert [p["minutes"] for p in curve] == sorted(p["minutes"] for p in curve)
    assert curve[-1]["final"] and curve[-1]["wer"] == test["greedy"]["wer"]
    assert [p["epoch"] for p in curve] == sorted(p["epoch"] for p in curve)
    for point in curve[:-1]:
        at = dict(line.split("\t", 1) for line in Path(point["predictions"]).read_text().splitlines())
        wer = 100 * jiwer.wer([refs[i] for i in ids], [" ".join(at[i].split()) for i in ids])
        assert point["wer"] == pytest.approx(wer, abs=1e-9)
        assert f"| epoch {point['epoch']} | {point['minutes']:.1f} | {wer:.1f}% |" in report
    # the report's command for transcribing a file runs as printed, and on a test utterance it scores
    # near the evaluation's transcript of it (infer trims silence, transcribe does not)
    line = next(x for x in report.splitlines() if x.startswith(".venv/bin/jasper transcribe "))
    words = shlex.split(line)
    some = max(ids, key=lambda i: len(refs[i]))
    flac = next((cache / "synth" / "test").rglob(f"{some}.flac"))
    words = [str(Path(sys.executable).parent / "jasper"), *words[1:-1], str(flac)]
    heard = subprocess.run(words, cwd=REPO, capture_output=True, text=True)
    assert heard.returncode == 0, heard.stderr[-3000:]
    # `<path>\t<text>`: an empty transcript (a model still on the blank plateau) leaves the tab last
    text, evaluated = heard.stdout.rstrip("\n").split("\t", 1)[1], " ".join(hyps[some].split())
    assert abs(jiwer.cer(refs[some], text) - jiwer.cer(refs[some], evaluated)) < 0.15, (text, evaluated)
    # a second run resumes: corpus and LM cached, training budget already spent
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "0 utterances were already there" not in again.stdout
    # nothing changed since: every evaluation of the last run is reused, with the same figures
    assert again.stdout.count("(up to date: ") >= 3 + len(curve) - 1 and "$ " in again.stdout
    assert json.loads((out / "summary.json").read_text())["splits"] == summary["splits"]
    # its report tells this invocation's minutes (no training left) from the training time of all runs
    header = (out / "report.md").read_text().splitlines()[2]
    invocation = re.search(r"training ([0-9.]+) min\); training time over all runs: ([0-9.]+) min", header)
    assert invocation and float(invocation[1]) < 0.5 and float(invocation[2]) >= 1.25, header


def test_each_engine_set_has_its_own_cached_corpus(tmp_path: Path) -> None:
    assert corpus_dir(tmp_path, ["piper", "espeak", "festival", "flite"]) == tmp_path / "synth"
    kokoro = corpus_dir(tmp_path, ["espeak", "flite", "festival", "piper", "kokoro"])
    assert kokoro == tmp_path / "synth-espeak-festival-flite-kokoro-piper"
    assert corpus_dir(tmp_path, ["kokoro", "kokoro"]) == tmp_path / "synth-kokoro"
