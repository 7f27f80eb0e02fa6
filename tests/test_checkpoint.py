"""Checkpoints: NVIDIA-style dicts round-trip, prefixes and legacy keys, clear errors, atomic saves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jasper import checkpoint, config
from jasper.checkpoint import CheckpointError
from jasper.model import Jasper

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _model(seed: int) -> Jasper:
    torch.manual_seed(seed)
    return Jasper.from_config(config.load(TINY)).eval()


def _outputs(model: Jasper) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.randn(2, 64, 48), torch.tensor([48, 30]))[0]


def test_reference_nesting_round_trip(tmp_path: Path) -> None:
    model, ema = _model(0), _model(1)
    path = tmp_path / "Jasper_epoch1_checkpoint.pt"
    torch.save(
        {
            "epoch": 1,
            "step": 10,
            "best_wer": 0.5,
            "state_dict": model.state_dict(),
            "ema_state_dict": ema.state_dict(),
            "optimizer": {},
            "scaler": {},
        },
        path,
    )
    fresh = _model(2)
    ckpt = checkpoint.load_weights(fresh, path)
    assert ckpt["epoch"] == 1 and torch.equal(_outputs(fresh), _outputs(model))
    checkpoint.load_weights(fresh, path, ema=True)
    assert torch.equal(_outputs(fresh), _outputs(ema))


def test_ddp_prefix_and_bare_state_dict(tmp_path: Path) -> None:
    model = _model(0)
    path = tmp_path / "bare.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    fresh = _model(3)
    checkpoint.load_weights(fresh, path)
    assert torch.equal(_outputs(fresh), _outputs(model))


def test_legacy_key_names() -> None:
    model = _model(0)
    legacy = {}
    for k, v in model.state_dict().items():
        k = k.replace("encoder.layers.", "jasper_encoder.encoder.").replace(
            "decoder.layers.", "jasper_decoder.decoder_layers."
        )
        legacy[k] = v
    legacy["audio_preprocessor.featurizer.fb"] = torch.zeros(1)
    fresh = _model(4)
    checkpoint.load_state_dict(fresh, legacy)
    assert torch.equal(_outputs(fresh), _outputs(model))


def test_mismatch_is_reported_clearly(tmp_path: Path) -> None:
    sd = _model(0).state_dict()
    sd.pop("decoder.layers.0.bias")
    sd["encoder.layers.0.conv.0.weight"] = torch.zeros(1, 1, 1)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        checkpoint.load_state_dict(_model(1), sd, source="x.pt")
    msg = str(e.value)
    assert "1 missing (decoder.layers.0.bias)" in msg and "1 unexpected (extra.weight)" in msg
    assert "wrong shape" in msg and "encoder.layers.0.conv.0.weight" in msg


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.read(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoint.read(bad)


def test_weights_only_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": Path("x")}, path)  # an arbitrary class, not plain data
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoint.read(path)


def test_atomic_save_retention_and_latest(tmp_path: Path) -> None:
    for epoch in (1, 2, 3, 4, 100):
        checkpoint.atomic_save({"state_dict": {}, "epoch": epoch}, checkpoint.epoch_path(tmp_path, epoch))
    (tmp_path / ".Jasper_epoch5_checkpoint.pt.x1y2.tmp").write_bytes(b"half a save, then SIGKILL")
    checkpoint.prune(tmp_path, keep_last=2, milestones=(2,))
    assert [e for e, _ in checkpoint.epoch_checkpoints(tmp_path)] == [2, 4, 100]
    assert not list(tmp_path.glob(".*.tmp"))
    checkpoint.epoch_path(tmp_path, 100).write_bytes(b"truncated")
    path, ckpt = checkpoint.latest_loadable(tmp_path)
    assert path.name == "Jasper_epoch4_checkpoint.pt" and ckpt["epoch"] == 4
