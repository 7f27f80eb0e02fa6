"""Two CPU processes (torchrun + gloo, via `NUM_GPUS=2 scripts/train.sh`): DDP training with a step
whose loss is infinite on one rank only, a sharded dev WER equal to a one-process evaluation, and
the same parameters as one process training on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO, impossible_clip, shortest_mini_rows, write_manifest

from jasper import checkpoint, config
from jasper.data import AudioDataset, ShardedEvalSampler, build_loader, load_utterances
from jasper.features import FilterbankFeatures
from jasper.model import Jasper
from jasper.text import Tokenizer
from jasper.training.evaluation import evaluate


def _manifests(tmp: Path) -> tuple[Path, str, str]:
    data, rows = shortest_mini_rows()
    train = write_manifest(tmp / "train.json", [*rows[:7], impossible_clip(data, rows, tmp)])
    return data, train, write_manifest(tmp / "val.json", rows[8:13])


def _train_sh(env: dict[str, str]) -> subprocess.CompletedProcess:
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "train.sh")],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return run


@pytest.mark.slow
def test_two_gloo_processes_train_and_evaluate_exactly(tmp_path: Path) -> None:
    data, train, val = _manifests(tmp_path)
    out = tmp_path / "out"
    env = {
        "NUM_GPUS": "2",
        "DATA_DIR": str(data),
        "MODEL_CONFIG": "configs/tiny.yaml",
        "OUTPUT_DIR": str(out),
        "TRAIN_MANIFESTS": train,
        "VAL_MANIFESTS": val,
        "EPOCHS": "1",
        "BATCH_SIZE": "1",
        "GRAD_ACCUMULATION_STEPS": "1",
        "EXTRA_ARGS": "--num_workers 0",
    }
    run = _train_sh(env)
    assert "world size 2" in run.stderr

    # 8 utterances, 1 per process: 4 updates; the 0.3 s clip's infinite loss skipped one on both ranks.
    ckpt = checkpoint.read(out / "Jasper_epoch1_checkpoint.pt")
    assert ckpt["step"] == 5 and ckpt["skipped_steps"] == 1 and len(ckpt["rng"]) == 2
    records = [json.loads(line[5:]) for line in (out / "nvlog.json").read_text().splitlines()]
    assert next(r for r in records if r.get("step") == "PARAMETER")["data"]["world_size"] == 2
    final = {k: v for r in records if r.get("step") == [] for k, v in r["data"].items()}
    # The clip sat on one rank's shard only; both ranks skipped that step and counted it.
    epoch = next(r["data"] for r in records if r.get("step") == [1])
    assert epoch["train_avg_skipped_steps_rank_min"] == epoch["train_avg_skipped_steps_rank_max"] == 1
    assert "ranks disagree" not in run.stderr

    # The sharded WER of the two processes is exactly the WER of one process on rank 0's weights.
    cfg = config.load(REPO / "configs" / "tiny.yaml")
    tokenizer = Tokenizer(cfg["labels"])
    data_cfg = config.section(cfg, "input_val", "audio_dataset")
    utts, _ = load_utterances([val], data, tokenizer, data_cfg)
    dataset = AudioDataset(utts, data_cfg)
    loader = build_loader(dataset, ShardedEvalSampler(dataset.durations(), 1), workers=0)
    features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features"))
    for key, subset in (("state_dict", "dev"), ("ema_state_dict", "dev_ema")):
        model = Jasper.from_config(cfg)
        checkpoint.load_state_dict(model, ckpt[key])
        result = evaluate(model, features, loader, tokenizer, torch.device("cpu"))
        assert 100 * result.wer == pytest.approx(final[f"{subset}_wer"], abs=1e-9), subset
        assert 100 * result.cer == pytest.approx(final[f"{subset}_cer"], abs=1e-9), subset
        assert result.loss == pytest.approx(final[f"{subset}_loss"], rel=1e-4), subset


@pytest.mark.slow
def test_two_processes_of_batch_b_equal_one_process_of_batch_2b(tmp_path: Path) -> None:
    """DDP averages the two ranks' gradients; one process with batch 2b in two micro-batches of b
    sums the same two gradients over the same utterances (the sampler's order depends only on the
    global batch). Micro-batches of b, not one forward over 2b: BatchNorm normalises each forward
    with its own batch statistics, and a rank's forward sees b utterances (SyncBatchNorm, which
    would pool them, runs on GPUs only). Dropout is off in the tiny config; dither is turned off."""
    data, rows = shortest_mini_rows()
    train = write_manifest(tmp_path / "train.json", rows[:8])
    val = write_manifest(tmp_path / "val.json", rows[8:10])
    common = {
        "DATA_DIR": str(data),
        "MODEL_CONFIG": "configs/tiny.yaml",
        "TRAIN_MANIFESTS": str(train),
        "VAL_MANIFESTS": str(val),
        "EPOCHS": "2",
        "LEARNING_RATE": "0.005",
        "EMA": "0",
        "SAVE_FREQUENCY": "1",
        "EXTRA_ARGS": "--num_workers 0 --override_config input_train.filterbank_features.dither=0",
    }
    two, one = tmp_path / "two", tmp_path / "one"
    _train_sh(
        {**common, "NUM_GPUS": "2", "BATCH_SIZE": "2", "GRAD_ACCUMULATION_STEPS": "1", "OUTPUT_DIR": str(two)}
    )
    _train_sh(
        {**common, "NUM_GPUS": "1", "BATCH_SIZE": "4", "GRAD_ACCUMULATION_STEPS": "2", "OUTPUT_DIR": str(one)}
    )
    a = checkpoint.read(two / "Jasper_epoch2_checkpoint.pt")
    b = checkpoint.read(one / "Jasper_epoch2_checkpoint.pt")
    assert a["step"] == b["step"] == 5  # 8 utterances, global batch 4: 2 updates an epoch
    names = [
        name for name, _ in Jasper.from_config(config.load(REPO / "configs" / "tiny.yaml")).named_parameters()
    ]
    before = checkpoint.read(two / "Jasper_epoch1_checkpoint.pt")["state_dict"]
    for name in names:
        torch.testing.assert_close(
            a["state_dict"][name], b["state_dict"][name], atol=2e-5, rtol=1e-4, msg=name
        )
        assert not torch.equal(a["state_dict"][name], before[name]), f"{name} was not updated in epoch 2"
