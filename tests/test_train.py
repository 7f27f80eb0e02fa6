"""`jasper train` end to end on real LibriSpeech clips with the tiny config: checkpoints, logs, LR
warmup, overfitting, exact mid-epoch resume, skipped infinite losses, time limit, SIGTERM, train.sh."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO, impossible_clip, shortest_mini_rows, write_manifest

from jasper import checkpoint, graphs
from jasper.cli import main

TINY = str(REPO / "configs" / "tiny.yaml")
REFERENCE_KEYS = {"epoch", "step", "best_wer", "state_dict", "ema_state_dict", "optimizer", "scaler"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """NeMo manifests over the shortest real clips, plus a 0.3 s clip whose transcript cannot fit."""
    data, rows = shortest_mini_rows()
    tmp = tmp_path_factory.mktemp("manifests")
    impossible = impossible_clip(data, rows, tmp)
    return SimpleNamespace(
        data=str(data),
        rows=rows,
        train8=write_manifest(tmp / "train8.json", rows[:8]),
        train6=write_manifest(tmp / "train6.json", rows[:6]),
        train4=write_manifest(tmp / "train4.json", rows[:4]),
        val4=write_manifest(tmp / "val4.json", rows[8:12]),
        with_impossible=write_manifest(tmp / "impossible.json", [*rows[:3], impossible]),
        impossible=impossible,
    )


def train_args(corpus: SimpleNamespace, out: Path, train: str, *extra: str) -> list[str]:
    return [
        "train",
        "--model_config",
        TINY,
        "--train_manifests",
        train,
        "--val_manifests",
        corpus.val4,
        "--dataset_dir",
        corpus.data,
        "--output_dir",
        str(out),
        "--num_workers",
        "0",
        "--threads",  # one thread: a busy 2-core runner stalls two-thread kernels badly
        "1",
        "--log_frequency",
        "1",
        "--eval_frequency",
        "1000",
        "--prediction_frequency",
        "1000",
        *extra,
    ]


def records(log_file: Path) -> list[dict]:
    return [json.loads(line[5:]) for line in log_file.read_text().splitlines() if line.startswith("DLLL ")]


def logged(log_file: Path, key: str) -> list[float]:
    return [r["data"][key] for r in records(log_file) if r["type"] == "LOG" and key in r.get("data", {})]


def test_short_run_checkpoint_log_and_warmup(corpus: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = train_args(
        corpus, out, corpus.train8, "--batch_size", "2", "--epochs", "1", "--warmup_epochs", "1"
    )
    args += ["--lr", "0.01", "--ema", "0.9", "--eval_frequency", "2", "--save_best_from", "0"]
    assert main(args) == 0

    ckpt = checkpoint.read(out / "Jasper_epoch1_checkpoint.pt")  # weights_only: plain data only
    assert REFERENCE_KEYS | {"sampler", "rng", "config", "args"} <= ckpt.keys()
    assert (ckpt["epoch"], ckpt["step"]) == (1, 5)  # 4 steps/epoch done; the next update is number 5
    assert ckpt["sampler"] == {"epoch": 2, "batches_done": 0, "global_batch": 2, "steps_per_epoch": 4}
    assert {"torch", "numpy", "python", "cuda"} <= ckpt["rng"][0].keys()
    assert ckpt["ema_state_dict"].keys() == ckpt["state_dict"].keys()
    assert ckpt["args"]["batch_size"] == 2 and ckpt["config"]["labels"][1] == "a"

    log_file = out / "nvlog.json"
    recs = records(log_file)
    assert any(r["type"] == "METADATA" and r["metric"] == "train_loss" for r in recs)
    params = next(r["data"] for r in recs if r.get("step") == "PARAMETER")
    assert params["world_size"] == 1 and params["steps_per_epoch"] == 4
    # The metric records reach the JSON log (the reference's only reached stdout).
    assert len(logged(log_file, "train_loss")) == 4
    assert len(logged(log_file, "train_avg_throughput")) == 2  # the epoch and the run
    assert all(v > 0 for v in logged(log_file, "train_audio_rate"))
    assert logged(log_file, "train_wait")
    # Warmup starts at the first update: lr * (s+1) / (warmup_steps+1), not the peak.
    assert logged(log_file, "train_lrate") == pytest.approx([0.01 * s / 5 for s in range(1, 5)])
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 4 / 5)

    # Evaluations at updates 2 and 4, plus none at the end (update 4 was just evaluated).
    ema_wers = logged(log_file, "dev_ema_wer")
    assert len(ema_wers) == 2 and len(logged(log_file, "dev_wer")) == 2 and logged(log_file, "dev_cer")
    best = checkpoint.read(out / "Jasper_best_checkpoint.pt")
    assert best["best_wer"] == pytest.approx(min(ema_wers) / 100)  # its own WER, not the previous best
    for subset in ("train", "dev", "dev_ema"):
        assert list((out / subset).glob("events.out.tfevents.*")), subset


def test_progress_bar_shows_loss_lr_and_throughput(
    corpus: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = train_args(corpus, tmp_path / "bar", corpus.train4, "--batch_size", "2", "--epochs", "1")
    assert main([*args, "--progress", "on", "--pre_allocate_range", "32", "48"]) == 0
    err = capsys.readouterr().err
    assert "pre-allocating" in err and "epoch 1: 100%" in err and "2/2" in err
    assert all(f"{key}=" in err for key in ("loss", "lr", "utt_s")), err
    assert main([*args, "--output_dir", str(tmp_path / "quiet")]) == 0  # auto: stderr is not a terminal
    assert "epoch 1:" not in capsys.readouterr().err


def test_small_model_memorises_ten_utterances_to_wer_zero(corpus: SimpleNamespace, tmp_path: Path) -> None:
    """The 2.5 M-parameter CPU Jasper, no augmentation, one batch of the ten shortest real clips
    (36 s, 98 words): 60 updates reach WER 0 on them (40 did here), and the loss falls to near 0."""
    out = tmp_path / "overfit"
    ten = write_manifest(tmp_path / "ten.json", corpus.rows[:10])
    args = train_args(corpus, out, ten, "--batch_size", "10", "--epochs", "60", "--optimizer", "adamw")
    args += ["--model_config", str(REPO / "configs" / "jasper5x3_cpu.yaml"), "--val_manifests", ten]
    args += ["--override_config", "input_train.audio_dataset.speed_perturbation=None"]
    args += ["--override_config", "input_train.filterbank_features.vtlp=None"]
    args += ["--lr", "3e-3", "--warmup_epochs", "10", "--weight_decay", "0", "--ema", "0"]
    args += ["--save_frequency", "1000", "--threads", "2"]
    assert main(args) == 0
    losses = logged(out / "nvlog.json", "train_loss")
    assert len(losses) == 60 and losses[-1] < 1.0 < losses[0], losses
    assert logged(out / "nvlog.json", "dev_wer") == [0.0]
    assert logged(out / "nvlog.json", "dev_cer") == [0.0]


def test_resume_mid_epoch_equals_uninterrupted_run(
    corpus: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Augmentation, dropout-free tiny model, EMA: every random draw must repeat after the resume.
    extra = ["--batch_size", "2", "--epochs", "2", "--ema", "0.9", "--lr", "5e-3"]
    extra += [
        "--override_config",
        "input_train.filterbank_features.spec_augment={'freq_masks':1,'time_masks':1}",
    ]
    extra += [
        "--override_config",
        "input_train.audio_dataset.speed_perturbation={'min_rate':0.9,'max_rate':1.1}",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    # 3 steps/epoch, 6 updates. Pre-allocation must leave weights, BN statistics and RNG as they were.
    assert main(train_args(corpus, straight, corpus.train6, *extra, "--pre_allocate_range", "32", "64")) == 0

    assert main(train_args(corpus, split, corpus.train6, *extra, "--stop_after_steps", "4")) == 0
    mid = checkpoint.read(split / "Jasper_epoch2_checkpoint.pt")
    assert mid["sampler"]["epoch"] == 2 and mid["sampler"]["batches_done"] == 1 and mid["epoch"] == 1
    (split / "Jasper_epoch3_checkpoint.pt").write_bytes(b"truncated by a crash")  # newest, unreadable

    with caplog.at_level("WARNING"):
        assert main(train_args(corpus, split, corpus.train6, *extra, "--resume")) == 0
    assert "skipping unreadable checkpoint" in caplog.text and "Jasper_epoch3" in caplog.text
    a = checkpoint.read(straight / "Jasper_epoch2_checkpoint.pt")
    b = checkpoint.read(split / "Jasper_epoch2_checkpoint.pt")
    assert a["step"] == b["step"] == 7
    # One log for both jobs; its training clock runs on across the resume and ends at the checkpoint's.
    clock = [
        r["train_seconds"]
        for r in records(split / "nvlog.json")
        if r["type"] == "LOG" and r["step"] != "PARAMETER"
    ]
    assert clock == sorted(clock) and clock[-1] == b["train_seconds"] > clock[0] >= 0
    for key in ("state_dict", "ema_state_dict"):
        for name, value in a[key].items():
            torch.testing.assert_close(b[key][name], value, atol=1e-6, rtol=0, msg=f"{key}.{name}")


def test_infinite_loss_step_is_skipped_and_counted(corpus: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "inf"
    args = train_args(corpus, out, corpus.with_impossible, "--batch_size", "1", "--epochs", "1")
    assert main(args) == 0
    ckpt = checkpoint.read(out / "Jasper_epoch1_checkpoint.pt")
    assert ckpt["skipped_steps"] == 1 and ckpt["step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert logged(out / "nvlog.json", "train_avg_skipped_steps") == [1]
    assert len(logged(out / "nvlog.json", "train_loss")) == 3  # the skipped step logs no loss
    assert len(logged(out / "nvlog.json", "train_lrate")) == 4


def test_unreadable_file_is_skipped_with_a_counted_warning(
    corpus: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio")
    rows = [*corpus.rows[:3], {"audio_filepath": str(bad), "duration": 2.0, "text": "hello"}]
    manifest = write_manifest(tmp_path / "bad.json", rows)
    strict = train_args(
        corpus, tmp_path / "strict", manifest, "--batch_size", "1", "--epochs", "1", "--strict"
    )
    assert main(strict) == 2
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        assert main(train_args(corpus, out, manifest, "--batch_size", "1", "--epochs", "1")) == 0
    assert f"skipping unreadable utterance: {bad}: unreadable audio" in caplog.text
    ckpt = checkpoint.read(out / "Jasper_epoch1_checkpoint.pt")
    assert ckpt["skipped_files"] == 1 and ckpt["skipped_steps"] == 1  # its batch had nothing else
    assert logged(out / "nvlog.json", "train_avg_skipped_files") == [1]  # the epoch record counts it


def test_time_limit_stops_with_checkpoint_and_final_eval(corpus: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "budget"
    args = train_args(
        corpus, out, corpus.train8, "--batch_size", "2", "--epochs", "5", "--lr_policy", "legacy"
    )
    args += ["--time_limit_minutes", "0.0001", "--lr_schedule_by", "time"]
    assert main(args) == 0
    ckpt = checkpoint.read(out / "Jasper_epoch1_checkpoint.pt")
    assert ckpt["step"] == 2 and ckpt["sampler"]["batches_done"] == 1 and ckpt["train_seconds"] > 0.006
    assert len(logged(out / "nvlog.json", "dev_wer")) == 1
    # A resumed job sees the budget spent and stops at once.
    assert main([*args, "--resume"]) == 0
    assert checkpoint.read(out / "Jasper_epoch1_checkpoint.pt")["step"] == 2


def test_keep_every_saves_and_keeps_every_nth_epoch(corpus: SimpleNamespace, tmp_path: Path) -> None:
    """--keep_every 2 over 5 epochs of 1 update: epochs 2 and 4 kept as milestones, plus the last two
    (4, 5) that retention keeps anyway; 1 and 3 are never saved (save_frequency 10)."""
    out = tmp_path / "every"
    args = train_args(corpus, out, corpus.train4, "--batch_size", "4", "--epochs", "5")
    args += ["--save_frequency", "10", "--keep_every", "2", "--keep_milestones"]
    assert main(args) == 0
    assert [e for e, _ in checkpoint.epoch_checkpoints(out)] == [2, 4, 5]


def test_argument_errors_are_one_line(
    corpus: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = train_args(corpus, tmp_path, corpus.train8, "--batch_size", "3", "--grad_accumulation_steps", "2")
    assert main(args) == 2
    assert "not divisible" in capsys.readouterr().err


def test_help_covers_every_reference_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    reference = (
        "epochs warmup_epochs hold_epochs epochs_this_job cudnn_benchmark amp fp16 seed local_rank "
        "pre_allocate_range batch_size lr min_lr lr_policy lr_exp_gamma weight_decay grad_accumulation_steps "
        "optimizer ema dali_device resume ckpt save_frequency keep_milestones save_best_from eval_frequency "
        "log_frequency prediction_frequency model_config train_manifests val_manifests dataset_dir "
        "output_dir log_file benchmark_epochs_num override_config"
    )
    for name in reference.split() + [
        "no-cudnn_benchmark",
        "amp_dtype",
        "time_limit_minutes",
        "strict",
    ]:
        assert f"--{name}" in text, name


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_checkpoint(corpus: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "term"
    args = train_args(corpus, out, corpus.train8, "--batch_size", "2", "--epochs", "50")
    args[args.index("--num_workers") + 1] = "2"  # workers must leave the signal to the trainer
    proc = subprocess.Popen(
        [sys.executable, "-m", "jasper.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "iter 2/4" in line and not any("SIGTERM" in seen for seen in lines):
            proc.send_signal(signal.SIGTERM)
            lines.append("(SIGTERM sent)\n")
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, "".join(lines)
    ckpt = checkpoint.read(out / "Jasper_epoch1_checkpoint.pt")
    assert ckpt["epoch"] == 0 and ckpt["sampler"]["batches_done"] in (2, 3)  # stopped at a step boundary
    assert "SIGTERM received" in "".join(lines)


@pytest.mark.slow
def test_train_sh_runs_with_reference_variables(corpus: SimpleNamespace, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATA_DIR": corpus.data,
        "MODEL_CONFIG": "configs/tiny.yaml",
        "OUTPUT_DIR": str(tmp_path / "sh"),
        "TRAIN_MANIFESTS": corpus.train4,
        "VAL_MANIFESTS": corpus.val4,
        "EPOCHS": "1",
        "NUM_GPUS": "1",
        "BATCH_SIZE": "2",
        "GRAD_ACCUMULATION_STEPS": "2",
        "EXTRA_ARGS": "--num_workers 0 --threads 1",
    }
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "train.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = checkpoint.read(tmp_path / "sh" / "Jasper_epoch1_checkpoint.pt")
    assert ckpt["args"]["optimizer"] == "novograd" and ckpt["args"]["keep_milestones"] == [100, 200, 300, 400]
    assert ckpt["args"]["resume"] and ckpt["args"]["ema"] == 0.999 and ckpt["ema_state_dict"]
    assert "--dali_device gpu" in out.stderr and math.isfinite(ckpt["optimizer"]["param_groups"][0]["lr"])


def test_train_benchmark_report_on_synthetic_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "synthetic"
    assert (
        main(["train-benchmark", "data", "--output_dir", str(data), "--utterances", "8", "--duration", "1"])
        == 0
    )
    log_file = tmp_path / "perf.json"
    args = [
        "train",
        "--model_config",
        TINY,
        "--dataset_dir",
        str(data),
        "--output_dir",
        str(tmp_path / "run"),
    ]
    args += ["--train_manifests", str(data / "train.json"), "--val_manifests", str(data / "val.json")]
    args += ["--batch_size", "2", "--epochs", "1", "--log_frequency", "1", "--log_file", str(log_file)]
    args += ["--num_workers", "0", "--threads", "1"]
    assert main(args) == 0
    out = tmp_path / "report"
    assert (
        main(["train-benchmark", "report", "--warmup_steps", "1", "--output_dir", str(out), str(log_file)])
        == 0
    )
    table = capsys.readouterr().out
    assert "| Batch size / GPU | GPUs | Throughput - FP32/TF32 | Throughput - mixed precision |" in table
    row = next(line for line in table.splitlines() if line.startswith("| 2 | 1 |"))
    assert row.endswith("| - | - | 1.00 | - |")
    result = json.loads((out / "train_benchmark.json").read_text())
    assert result["runs"][0]["steps"] == 3 and result["runs"][0]["throughput"] > 0
    assert (out / "train_benchmark.png").stat().st_size > 1000


@pytest.mark.skipif(
    graphs.compiler_problem(torch.device("cpu")) is not None, reason="inductor cannot build CPU code here"
)
def test_compile_trains_and_logs_its_compiled_shapes(corpus: SimpleNamespace, tmp_path: Path) -> None:
    """`--compile`: the run trains, and the log counts the shapes compiled (one per length bucket
    met, never more than the steps taken), so a recompile per batch would show."""
    out = tmp_path / "run"
    args = train_args(corpus, out, corpus.train8, "--batch_size", "2", "--epochs", "1", "--compile")
    assert main(args) == 0
    compiles = logged(out / "nvlog.json", "train_compiles")
    assert len(compiles) == 4 and compiles == sorted(compiles) and 1 <= compiles[-1] <= 4
    assert all(math.isfinite(v) for v in logged(out / "nvlog.json", "train_loss"))
    assert logged(out / "nvlog.json", "train_compile_seconds")[-1] > 0
