"""CUDA paths: features and logits against the reference fixtures on the GPU, fp16 training with a
GradScaler, bf16 training, resume on the GPU, NCCL through torchrun, and `jasper infer` with --amp.

Skipped where no CUDA device is visible (CI); `scripts/gpu_check.sh` runs them on a GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, require_shared, shortest_mini_rows, write_manifest

from jasper import checkpoint, config
from jasper.cli import main
from jasper.features import FilterbankFeatures
from jasper.model import Jasper

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")

TINY = str(REPO / "configs" / "tiny.yaml")
ENV = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(autouse=True)
def exact_fp32() -> None:
    """TF32 changes fp32 results in the 3rd digit; the parity tests want IEEE fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_reference_features_on_cuda() -> None:
    fx = torch.load(require_shared("fixtures", "reference", "features.pt"), weights_only=True)
    module = FilterbankFeatures(**fx["settings"]).eval().cuda()
    feats, lens = module(fx["audio"].cuda(), fx["audio_lens"].cuda())
    assert torch.equal(lens.cpu(), fx["feature_lens"])
    assert (feats.cpu() - fx["features"]).abs().max() < 1e-3


def test_reference_log_probs_on_cuda_fp32_and_fp16() -> None:
    fx = torch.load(require_shared("fixtures", "reference", "model.pt"), weights_only=True)
    model = Jasper.from_config(fx["config"]).eval().cuda()
    model.load_state_dict(fx["state_dict"], strict=True)
    x, x_lens = fx["features"].cuda(), fx["feature_lens"].cuda()
    with torch.no_grad():
        log_probs, lens = model(x, x_lens)
        with torch.autocast("cuda", dtype=torch.float16):
            half, _ = model(x, x_lens)
    assert torch.equal(lens.cpu(), fx["out_lens"])
    assert (log_probs.cpu() - fx["log_probs"]).abs().max() < 1e-4
    # fp16 keeps 11 mantissa bits: log-probs within a few hundredths (bf16 on a CPU: 0.027 here).
    valid = torch.arange(half.shape[1])[None, :] < fx["out_lens"][:, None]
    assert (half.float().cpu() - fx["log_probs"]).abs()[valid].max() < 0.03


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root, rows = shortest_mini_rows()  # all under max_duration
    tmp = tmp_path_factory.mktemp("cuda")
    train, val = write_manifest(tmp / "train.json", rows[:8]), write_manifest(tmp / "val.json", rows[8:12])
    return {"root": str(root), "train": train, "val": val}


def train_args(corpus: dict, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model_config",
        TINY,
        "--train_manifests",
        corpus["train"],
        "--val_manifests",
        corpus["val"],
        "--dataset_dir",
        corpus["root"],
        "--output_dir",
        str(out),
        "--device",
        "cuda",
        "--batch_size",
        "2",
        "--num_workers",
        "0",
        "--log_frequency",
        "1",
        "--eval_frequency",
        "1000",
        "--lr",
        "5e-3",
        *extra,
    ]


def losses(log_file: Path) -> list[float]:
    records = [json.loads(line[5:]) for line in log_file.read_text().splitlines() if line.startswith("DLLL ")]
    return [r["data"]["train_loss"] for r in records if "train_loss" in r.get("data", {})]


def test_fp16_training_with_grad_scaler_and_resume(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "fp16"
    assert main(train_args(corpus, out, "--amp", "--epochs", "2", "--stop_after_steps", "3")) == 0
    ckpt = checkpoint.read(next(out.glob("Jasper_epoch*_checkpoint.pt")))
    assert ckpt["scaler"] and ckpt["scaler"]["scale"] > 0, "fp16 AMP must save the GradScaler's state"
    assert all(v.device.type == "cpu" for v in ckpt["state_dict"].values())
    assert main(train_args(corpus, out, "--amp", "--epochs", "2", "--resume")) == 0
    run = losses(out / "nvlog.json")
    assert len(run) == 8 and all(np.isfinite(run)), run
    params = checkpoint.read(out / "Jasper_epoch2_checkpoint.pt")
    assert params["step"] == 9


def test_bf16_training(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "bf16"
    args = train_args(corpus, out, "--amp", "--amp_dtype", "bfloat16", "--epochs", "1", "--ema", "0.9")
    assert main(args) == 0
    run = losses(out / "nvlog.json")
    assert len(run) == 4 and all(np.isfinite(run)), run
    assert not checkpoint.read(out / "Jasper_epoch1_checkpoint.pt")["scaler"].get("scale")


def test_torchrun_initialises_nccl(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "nccl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "-m", "jasper.cli"]
    cmd += train_args(corpus, out, "--epochs", "1")
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    params = next(
        json.loads(line[5:])["data"]
        for line in (out / "nvlog.json").read_text().splitlines()
        if '"PARAMETER"' in line
    )
    assert params["device"].startswith("cuda") and params["world_size"] == 1
    assert "process group: nccl backend" in run.stderr, run.stderr


def test_infer_cuda_matches_cpu_logits(corpus: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = config.load(TINY)
    state = Jasper.from_config(cfg).state_dict()
    ckpt = tmp_path / "tiny.pt"
    torch.save({"state_dict": state, "config": cfg}, ckpt)
    logits = {}
    for name, extra in (("cpu", ["--cpu"]), ("cuda", []), ("fp16", ["--amp"])):
        args = ["infer", "--model_config", TINY, "--ckpt", str(ckpt), "--dataset_dir", corpus["root"]]
        args += ["--val_manifests", corpus["val"], "--workers", "0", "--batch_size", "2"]
        args += ["--save_logits", str(tmp_path / f"{name}.npz"), "--log_file", str(tmp_path / f"{name}.json")]
        assert main(args + extra) == 0
        with np.load(tmp_path / f"{name}.npz") as f:
            logits[name] = {k: f[k] for k in f.files}
    assert logits["cpu"].keys() == logits["cuda"].keys() == logits["fp16"].keys()
    for key, ref in logits["cpu"].items():
        if key.startswith("_"):
            continue
        assert np.abs(logits["cuda"][key] - ref).max() < 1e-3, key
        assert np.abs(logits["fp16"][key].astype(np.float32) - ref).max() < 0.1, key


def test_cuda_graphs_and_compile_equal_eager() -> None:
    """Replayed CUDA graphs and torch.compile give eager's log-probs on every valid frame, with one
    graph per (batch bucket, length bucket) and fresh outputs on every call."""
    from jasper import graphs

    torch.manual_seed(0)
    model = Jasper.from_config(config.load(TINY)).eval().cuda()
    replayed, compiled = graphs.CudaGraphs(model), graphs.Compiled(model)
    outputs = []
    with torch.inference_mode():
        for batch, frames in ((1, 200), (1, 205), (3, 250), (4, 300)):
            x = torch.randn(batch, 64, frames, device="cuda")
            lens = torch.tensor([frames - 11 * i for i in range(batch)], device="cuda")
            want, want_lens = model(x, lens)
            for wrapped in (replayed, compiled):
                got, got_lens = wrapped(x, lens)
                assert got.shape == want.shape and torch.equal(got_lens, want_lens)
                for i, n in enumerate(want_lens.tolist()):
                    torch.testing.assert_close(got[i, :n], want[i, :n], atol=1e-4, rtol=1e-4)
            outputs.append((replayed(x, lens)[0], want))
    for got, want in outputs:  # a later replay did not overwrite an earlier result
        torch.testing.assert_close(got[0, :10], want[0, :10], atol=1e-4, rtol=1e-4)
    assert replayed.compiles == 3  # (1, 208) holds 200 and 205; then (4, 256) and (4, 320)
