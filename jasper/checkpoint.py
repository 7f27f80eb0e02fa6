"""Checkpoint files: NVIDIA-compatible loading, atomic saving, retention and resume discovery.

A reference checkpoint is a dict with `state_dict` (and `ema_state_dict`, `optimizer`, `epoch`,
...). Files are read with `torch.load(weights_only=True)`, so a checkpoint from the internet cannot
run code. Writes go to a temporary file that is fsynced and renamed, so a job killed mid-save
never leaves a truncated latest checkpoint behind.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

PREFIX = "Jasper"
EPOCH_PATTERN = re.compile(r"_epoch(\d+)_checkpoint\.pt$")
# Pre-2021 checkpoints used other module names (spec 4.5).
LEGACY_RENAMES = (
    ("jasper_encoder.encoder.", "encoder.layers."),
    ("jasper_decoder.decoder_layers.", "decoder.layers."),
)
LEGACY_DROPPED = ("acoustic_model.", "audio_preprocessor.")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


def read(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (no pickled code). A bare state_dict is wrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(ckpt).__name__}")
    if "state_dict" not in ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = {"state_dict": ckpt}
    if "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: no 'state_dict' entry (keys: {sorted(ckpt)[:10]})")
    return ckpt


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP's `module.` prefix and convert legacy key names; drop pre-2021 extras."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if key.startswith(LEGACY_DROPPED):
            continue
        for old, new in LEGACY_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value
    return out


def load_weights(model: nn.Module, path: str | Path, ema: bool = False) -> dict[str, Any]:
    """Load `state_dict` (or `ema_state_dict` when `ema`) strictly into `model`; return the checkpoint.

    Missing or unexpected keys and shape mismatches are reported in one readable error instead of
    torch's wall of text.
    """
    ckpt = read(path)
    key = "state_dict"
    if ema:
        if ckpt.get("ema_state_dict"):
            key = "ema_state_dict"
        else:
            log.warning("%s has no EMA weights; using its plain state_dict", path)
    load_state_dict(model, ckpt[key], source=f"{path} [{key}]")
    return ckpt


def load_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "state_dict"
) -> None:
    """Strict load with a clear report of what is missing, unexpected or of the wrong shape."""
    state_dict = clean_state_dict(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
                parts.append(f"{len(items)} {title} ({shown})")
        raise CheckpointError(f"{source} does not fit the model config: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to a temp file in the same directory, fsync, then rename over `path`.

    A save that fails (a full disk, a file size limit) leaves `path` as it was, removes the temp
    file and raises `CheckpointError` saying so.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, RuntimeError) as e:  # torch.save turns a failed write into a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        kept = "the previous checkpoint there is unchanged" if path.exists() else "nothing was written"
        raise CheckpointError(f"{path}: saving the checkpoint failed ({e}); {kept}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def epoch_path(output_dir: str | Path, epoch: int, prefix: str = PREFIX) -> Path:
    """`<output_dir>/Jasper_epoch{E}_checkpoint.pt`, the reference's naming."""
    return Path(output_dir) / f"{prefix}_epoch{epoch}_checkpoint.pt"


def best_path(output_dir: str | Path, prefix: str = PREFIX) -> Path:
    return Path(output_dir) / f"{prefix}_best_checkpoint.pt"


def epoch_of(path: str | Path) -> int | None:
    """The epoch in an epoch checkpoint's file name (`Jasper_epoch12_checkpoint.pt` -> 12), else None."""
    m = EPOCH_PATTERN.search(Path(path).name)
    return int(m.group(1)) if m else None


def epoch_checkpoints(output_dir: str | Path, prefix: str = PREFIX) -> list[tuple[int, Path]]:
    """Epoch checkpoints in `output_dir`, oldest first."""
    found = [(epoch_of(p), p) for p in Path(output_dir).glob(f"{prefix}_epoch*_checkpoint.pt")]
    return sorted((e, p) for e, p in found if e is not None)


def prune(
    output_dir: str | Path, keep_last: int = 2, milestones: tuple[int, ...] = (), prefix: str = PREFIX
) -> None:
    """Delete epoch checkpoints except the newest `keep_last` and those at milestone epochs, and the
    temp files of saves that a SIGKILL or power cut interrupted (call it after a save completes)."""
    found = epoch_checkpoints(output_dir, prefix)
    for epoch, path in found[:-keep_last] if keep_last else found:
        if epoch not in milestones:
            path.unlink(missing_ok=True)
    for tmp in Path(output_dir).glob(f".{prefix}_*.tmp"):
        log.warning("removing %s, left by an interrupted save", tmp)
        tmp.unlink(missing_ok=True)


def latest_loadable(output_dir: str | Path, prefix: str = PREFIX) -> tuple[Path, dict[str, Any]] | None:
    """The newest epoch checkpoint that loads; corrupt ones are skipped with a warning."""
    for _epoch, path in reversed(epoch_checkpoints(output_dir, prefix)):
        try:
            return path, read(path)
        except CheckpointError as e:
            log.warning("skipping unreadable checkpoint: %s", e)
    return None
