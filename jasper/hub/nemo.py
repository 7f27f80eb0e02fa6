"""NeMo `.nemo` archives as jasper checkpoints: the config mapped to jasper's schema, the keys renamed.

A `.nemo` file (NeMo 1.0 and later) is a tar archive, gzipped up to NeMo 1.6 and plain since 1.7,
holding `model_config.yaml` and `model_weights.ckpt` (member names with or without `./`). A CTC
model's encoder is NeMo's `ConvASREncoder`, the block structure DeepLearningExamples' Jasper and
QuartzNet come from, so the weights map one to one:

    encoder.encoder.N.mconv.M.conv.weight -> encoder.layers.N.mconv.M.weight   (convolutions)
    encoder.encoder.N.mconv.M.weight      -> encoder.layers.N.mconv.M.weight   (BatchNorm)
    encoder.encoder.N.res.K.0.conv.weight -> encoder.layers.N.res.K.0.weight   (residual panes)
    decoder.decoder_layers.0.*            -> decoder.layers.0.*

and the config becomes a jasper config with a `quartznet` model section (NeMo names every main
path `mconv`, separable or not). What jasper's blocks cannot express (squeeze-excitation, grouped
convolutions, other residual modes, normalisations other than batch) is refused by name.

NeMo's front end is the reference's with two differences that every NeMo model was trained with:
2^-24 added before the log, and no leading padding frames before the model (`pad_leading` 0). NeMo
2.5 changed the framing as well (`jasper.features`, `frontend: nemo-2.5`). A model is run with the
front end of the NeMo release that trained it: the catalogue says which for the published models
(NeMo 1.x), a bare `.nemo` file gets NeMo 3.0's (the release `scripts/setup_nemo.sh` installs), and
`JASPER_NEMO_FRONTEND=1.x|2.5` chooses either for any NeMo model.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import torch
import yaml

from jasper import config
from jasper.checkpoint import CheckpointError

FRONTEND_VARIABLE = "JASPER_NEMO_FRONTEND"
FRONTENDS = {"1.x": "reference", "2.5": "nemo-2.5"}  # NeMo release -> jasper's `frontend` key
DEFAULT_FRONTEND = "2.5"  # NeMo 3.0.0, pinned in scripts/setup_nemo.sh
LOG_ZERO_GUARD = 2**-24
PAD_TO = 16
ENCODER_TARGET = "ConvASREncoder"
# ConvASREncoder block keys jasper expresses, and the values of the others it can take as they are.
BLOCK_KEYS = {
    "filters", "repeat", "kernel", "stride", "dilation", "dropout", "residual", "separable", "residual_dense",
}  # fmt: skip
NEUTRAL = {
    "groups": 1, "se": False, "residual_mode": "add", "kernel_size_factor": 1.0, "stride_last": False,
    "heads": -1, "future_context": -1, "se_reduction_ratio": 8, "se_context_size": -1,
    "se_interpolation_mode": "nearest", "quantize": False,
}  # fmt: skip
RENAMES = (
    (
        re.compile(r"^encoder\.encoder\.(\d+)\.(mconv|res)\.(.*)\.conv\.weight$"),
        r"encoder.layers.\1.\2.\3.weight",
    ),
    (re.compile(r"^encoder\.encoder\.(\d+)\.(.*)$"), r"encoder.layers.\1.\2"),
    (re.compile(r"^decoder\.decoder_layers\.(.*)$"), r"decoder.layers.\1"),
)


ENGLISH = " abcdefghijklmnopqrstuvwxyz'"


def is_nemo(path: str | Path) -> bool:
    """A `.nemo` archive: by its suffix, or by being a tar that holds a `model_config.yaml`."""
    path = Path(path)
    if path.suffix == ".nemo":
        return True
    if not path.is_file() or not tarfile.is_tarfile(path):
        return False
    try:
        with tarfile.open(path, "r:*") as tar:
            return any(Path(m.name).name == "model_config.yaml" for m in tar)
    except (tarfile.TarError, OSError):
        return False


def frontend_choice(default: str = DEFAULT_FRONTEND) -> str:
    """The NeMo release whose front end runs a NeMo model: $JASPER_NEMO_FRONTEND, else `default`."""
    choice = os.environ.get(FRONTEND_VARIABLE) or default
    if choice not in FRONTENDS:
        raise config.ConfigError(f"{FRONTEND_VARIABLE}={choice!r}: expected one of {', '.join(FRONTENDS)}")
    return choice


def read(path: str | Path, frontend: str | None = None) -> dict[str, Any]:
    """A `.nemo` file as a jasper checkpoint dict: `state_dict` (jasper's keys), `config` (jasper's
    schema), `pad_leading` 0 and `nemo` (where it came from and which front end it runs with).

    `frontend` is the NeMo release whose front end the model runs with (`FRONTENDS`); None takes
    $JASPER_NEMO_FRONTEND, else NeMo 3.0's. Weights are read with `weights_only=True`.
    """
    path = Path(path)
    members = _members(path)
    if "model_config.yaml" not in members or "model_weights.ckpt" not in members:
        found = ", ".join(sorted(members)) or "nothing"
        if "module.yaml" in members:
            raise CheckpointError(
                f"{path}: a NeMo 0.x archive (module.yaml); only NeMo 1.0 and later are read"
            )
        raise CheckpointError(f"{path}: not a NeMo model archive (it holds {found})")
    try:
        nemo_cfg = yaml.safe_load(members["model_config.yaml"])
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: model_config.yaml is not valid YAML ({e})") from None
    try:
        weights = torch.load(io.BytesIO(members["model_weights.ckpt"]), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path}: model_weights.ckpt cannot be read ({type(e).__name__}: {e})"
        ) from None
    release = frontend_choice(frontend or DEFAULT_FRONTEND)
    cfg = jasper_config(nemo_cfg, FRONTENDS[release], source=f"{path} [model_config.yaml]")
    return {
        "state_dict": rename_keys(weights),
        "config": cfg,
        "pad_leading": 0,
        "nemo": {"path": str(path), "nemo_version": nemo_cfg.get("nemo_version"), "frontend": release},
    }


def _members(path: Path) -> dict[str, bytes]:
    """The archive's files by base name (`./model_config.yaml` and `model_config.yaml` alike)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with tarfile.open(path, "r:*") as tar:
            out = {}
            for member in tar:
                if member.isfile():
                    name = Path(member.name).name
                    if name in ("model_config.yaml", "model_weights.ckpt", "module.yaml"):
                        out[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
            return out
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: cannot be read as a .nemo (tar) archive ({e})") from None


def rename_keys(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NeMo's state_dict keys as jasper's; the preprocessor's buffers (window, filterbank) are dropped:
    jasper computes them from the config, equal to NeMo's."""
    out = {}
    for key, value in weights.items():
        if key.startswith("preprocessor."):
            continue
        for pattern, replacement in RENAMES:
            if pattern.match(key):
                key = pattern.sub(replacement, key)
                break
        out[key] = value
    return out


def jasper_config(nemo_cfg: dict[str, Any], frontend: str, source: str) -> dict[str, Any]:
    """A NeMo CTC model config in jasper's schema (validated); unsupported settings are errors naming
    the NeMo key."""

    def need(section: str) -> dict[str, Any]:
        value = nemo_cfg.get(section)
        if not isinstance(value, dict):
            raise config.ConfigError(f"{source}: {section}: missing; not a NeMo CTC model config")
        return value

    pre, enc, dec = need("preprocessor"), need("encoder"), need("decoder")
    if not str(enc.get("_target_", ENCODER_TARGET)).endswith(ENCODER_TARGET):
        raise config.ConfigError(
            f"{source}: encoder._target_ {enc.get('_target_')!r}: "
            "only ConvASREncoder (Jasper, QuartzNet) maps to jasper"
        )
    labels = list(dec.get("vocabulary") or nemo_cfg.get("labels") or [])
    if dec.get("num_classes", len(labels)) != len(labels):
        raise config.ConfigError(
            f"{source}: decoder.num_classes {dec.get('num_classes')} differs from the {len(labels)} labels"
        )
    for key in ("normalization_mode", "residual_mode"):
        expected = {"normalization_mode": "batch", "residual_mode": "add"}[key]
        if enc.get(key, expected) != expected:
            raise config.ConfigError(
                f"{source}: encoder.{key}: {enc[key]!r} is not supported (only {expected!r})"
            )
    sample_rate = int(pre.get("sample_rate", nemo_cfg.get("sample_rate", 16000)))
    features = {
        "sample_rate": sample_rate,
        "window_size": pre.get("window_size", 0.02),
        "window_stride": pre.get("window_stride", 0.01),
        "window": pre.get("window", "hann"),
        "normalize": pre.get("normalize", "per_feature"),
        "n_fft": pre.get("n_fft"),
        "preemph": pre.get("preemph", 0.97),
        "n_filt": pre.get("features", 64),
        "lowfreq": pre.get("lowfreq", 0),
        "highfreq": pre.get("highfreq"),
        "log": pre.get("log", True),
        "dither": pre.get("dither", 1e-5),
        "pad_align": pre.get("pad_to", PAD_TO),
        "frame_splicing": pre.get("frame_splicing", 1),
        "log_zero_guard_value": _guard(pre, source),
        "frontend": frontend,
    }
    for key in ("n_window_size", "n_window_stride", "stft_exact_pad", "stft_conv", "exact_pad"):
        if pre.get(key):
            raise config.ConfigError(f"{source}: preprocessor.{key}: {pre[key]!r} is not supported")
    if (
        pre.get("mag_power", 2.0) != 2.0
        or pre.get("pad_value", 0) != 0
        or pre.get("mel_norm", "slaney") != "slaney"
    ):
        raise config.ConfigError(
            f"{source}: preprocessor: only mag_power 2, pad_value 0 and mel_norm slaney map"
        )
    blocks = [_block(b, i, source) for i, b in enumerate(enc.get("jasper") or [])]
    cfg = {
        "name": str(nemo_cfg.get("target", "nemo")).rsplit(".", 1)[-1],
        "labels": labels,
        "input_val": {
            "audio_dataset": {
                "sample_rate": sample_rate,
                "trim_silence": False,
                "normalize_transcripts": True,
                # the English cleaner would transliterate another alphabet away (text.py)
                "normalizer": "english" if set(labels) <= set(ENGLISH) else "labels",
            },
            "filterbank_features": features,
        },
        "quartznet": {
            "encoder": {
                "init": enc.get("init_mode", "xavier_uniform"),
                "in_feats": enc.get("feat_in", features["n_filt"]),
                "frame_splicing": enc.get("frame_splicing", 1),
                "activation": enc.get("activation", "relu"),
                "use_conv_masks": bool(enc.get("conv_mask", True)),
                "blocks": blocks,
            },
            "decoder": {"in_feats": dec.get("feat_in"), "init": dec.get("init_mode", "xavier_uniform")},
        },
    }
    config.validate(cfg, source=source)
    return cfg


def _guard(pre: dict[str, Any], source: str) -> float:
    if pre.get("log_zero_guard_type", "add") != "add":
        raise config.ConfigError(f"{source}: preprocessor.log_zero_guard_type: only 'add' is supported")
    value = pre.get("log_zero_guard_value", LOG_ZERO_GUARD)
    if value == "tiny":
        return float(torch.finfo(torch.float32).tiny)
    if value == "eps":
        return float(torch.finfo(torch.float32).eps)
    return float(value)


def _block(block: dict[str, Any], index: int, source: str) -> dict[str, Any]:
    where = f"{source}: encoder.jasper[{index}]"
    for key, value in block.items():
        if key not in BLOCK_KEYS and (key not in NEUTRAL or value != NEUTRAL[key]):
            raise config.ConfigError(f"{where}.{key}: {value!r} is not supported by jasper's blocks")

    def one(key: str, default: int) -> list[int]:
        value = block.get(key, [default])
        return [int(value[0] if isinstance(value, list) else value)]

    return {
        "filters": int(block["filters"]),
        "repeat": int(block.get("repeat", 1)),
        "kernel_size": one("kernel", 11),
        "stride": one("stride", 1),
        "dilation": one("dilation", 1),
        "dropout": float(block.get("dropout", 0.0)),
        "residual": bool(block.get("residual", False)),
        "residual_dense": bool(block.get("residual_dense", False)),
        "separable": bool(block.get("separable", False)),
    }
