"""Load and validate Jasper YAML configs (the reference's schema), and apply `--override_config`.

A config is plain data: `load(path)` returns a dict with exactly the keys the file has, after
anchors and merge keys are resolved into independent copies. Validation happens on load, so a
typo in a 400-epoch run's config fails in the first second with the file and key path named,
not after an hour of data loading. Defaults for absent keys live in `SCHEMA` and are filled in by
`section()`, the accessor every consumer uses.
"""

from __future__ import annotations

import argparse
import ast
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

Number = (int, float)
_NONE = type(None)

# Each schema maps key -> (accepted types, default). A nested schema is named by a string.
SPEED_PERTURBATION = {
    "min_rate": (Number, 0.85),
    "max_rate": (Number, 1.15),
    "discrete": (bool, False),
    # The reference's PyTorch loader defaults to p=0.1, its DALI loader (used for NVIDIA's published
    # results) perturbs every utterance. We follow the published recipe: every utterance.
    "p": (Number, 1.0),
}
GAIN_PERTURBATION = {
    "min_gain_dbfs": (Number, -10.0),
    "max_gain_dbfs": (Number, 10.0),
    "p": (Number, 0.1),
}
SHIFT_PERTURBATION = {
    "min_shift_ms": (Number, -5.0),
    "max_shift_ms": (Number, 5.0),
    "p": (Number, 0.1),
}
AUDIO_DATASET = {
    "sample_rate": (int, 16000),
    "min_duration": (Number, 0.1),
    "max_duration": (Number, math.inf),
    "pad_to_max_duration": (bool, False),
    "max_utts": (int, 0),
    "normalize_transcripts": (bool, True),
    "normalizer": (str, "english"),  # ours: `english` (the reference's cleaner) or `labels` (text.py)
    "sort_by_duration": (bool, False),
    "trim_silence": (bool, False),
    "speed_perturbation": ((dict, _NONE), None, SPEED_PERTURBATION),
    "gain_perturbation": ((dict, _NONE), None, GAIN_PERTURBATION),
    "shift_perturbation": ((dict, _NONE), None, SHIFT_PERTURBATION),
    "ignore_offline_speed_perturbation": (bool, False),
}
SPEC_AUGMENT = {
    "freq_masks": (int, 0),
    "min_freq": (int, 0),
    "max_freq": (int, 10),
    "time_masks": (int, 0),
    "min_time": (int, 0),
    "max_time": (int, 10),
}
CUTOUT_AUGMENT = {
    "masks": (int, 0),
    "min_freq": (int, 20),
    "max_freq": (int, 20),
    "min_time": (int, 5),
    "max_time": (int, 5),
}
VTLP = {
    "min_warp": (Number, 0.9),
    "max_warp": (Number, 1.1),
}
FILTERBANK_FEATURES = {
    "sample_rate": (int, 8000),
    "window_size": (Number, 0.02),
    "window_stride": (Number, 0.01),
    "window": (str, "hamming"),
    "normalize": (str, "per_feature"),
    "n_fft": ((int, _NONE), None),
    "preemph": ((*Number, _NONE), 0.97),
    "n_filt": (int, 64),
    "lowfreq": (Number, 0),
    "highfreq": ((*Number, _NONE), None),
    "log": (bool, True),
    "dither": (Number, 1e-5),
    "pad_align": (int, 8),
    "pad_to_max_duration": (bool, False),
    "max_duration": (Number, math.inf),
    "frame_splicing": (int, 1),
    "spec_augment": ((dict, _NONE), None, SPEC_AUGMENT),
    "cutout_augment": ((dict, _NONE), None, CUTOUT_AUGMENT),
    "vtlp": ((dict, _NONE), None, VTLP),  # ours: vocal tract length perturbation (features.py)
    # NeMo's front end, for models imported from NeMo (features.py): absent from the reference's configs.
    "log_zero_guard_value": (Number, 1e-20),
    "frontend": (str, "reference"),
}
BLOCK = {
    "filters": (int, None),
    "repeat": (int, 3),
    "kernel_size": (list, [11]),
    "stride": (list, [1]),
    "dilation": (list, [1]),
    "padding": (str, "same"),
    "dropout": (Number, 0.2),
    "residual": (bool, True),
    "residual_dense": (bool, False),
    "separable": (bool, False),
    "infilters": (int, None),
}
ENCODER = {
    "in_feats": (int, None),
    "activation": (str, None),
    "frame_splicing": (int, 1),
    "init": (str, "xavier_uniform"),
    "use_conv_masks": (bool, False),
    "blocks": (list, []),
}
DECODER = {
    "in_feats": (int, None),
    "init": (str, "xavier_uniform"),
    "n_classes": (int, None),
}
REQUIRED = {"filters", "in_feats", "activation"}
CHOICES = {
    "window": {"hann", "hamming", "blackman", "bartlett", "none"},
    "activation": {"hardtanh", "relu", "selu"},
    "init": {"xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"},
    "padding": {"same"},
    "frontend": {"reference", "nemo-2.5"},
    "normalizer": {"english", "labels"},
}
MODEL_KEYS = ("jasper", "quartznet")
CROSS_CHECKED = ("sample_rate", "max_duration", "pad_to_max_duration")


class ConfigError(ValueError):
    """A config that does not fit the schema; the message names the file and the key path."""


def load(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a YAML config, apply `key.path=value` overrides, validate it and return it."""
    path = Path(path)
    if path.suffix == ".toml":
        raise ConfigError(f"{path}: TOML configs are from before 2021; convert it to the YAML schema")
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    cfg = _unshare(raw)
    for item in overrides:
        apply_override(cfg, item, source=str(path))
    validate(cfg, source=str(path))
    return cfg


def _unshare(value: Any) -> Any:
    """Copy nested containers so that YAML aliases become independent (no memo, unlike deepcopy)."""
    if isinstance(value, dict):
        return {k: _unshare(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshare(v) for v in value]
    return value


def add_override_argument(parser: argparse._ActionsContainer) -> None:
    """The reference's repeatable `--override_config KEY.PATH=VALUE`, for every command with a config."""
    parser.add_argument(
        "--override_config",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="change one config value before validation, e.g. input_val.audio_dataset.max_duration=10 "
        "(repeatable)",
    )


def apply_override(cfg: dict[str, Any], item: str, source: str = "<override>") -> None:
    """Set `a.b.c=VALUE` in place, as the reference's `--override_config` does.

    VALUE is parsed as a Python literal when it is one (else kept as a string). Intermediate keys
    must exist; an existing key keeps its type (numbers are interchangeable). `None` removes the
    key, which turns an optional section off (`...speed_perturbation=None`); validation then says
    whether the key was required. Unlike the reference, a value may itself contain '='.
    """
    if "=" not in item:
        raise ConfigError(f"{source}: override {item!r} must look like key.path=value")
    key_path, text = item.split("=", 1)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    *parents, last = key_path.split(".")
    node: Any = cfg
    for depth, key in enumerate(parents):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{source}: override {item!r}: no key {'.'.join(parents[: depth + 1])}")
        node = node[key]
    if not isinstance(node, dict):
        raise ConfigError(f"{source}: override {item!r}: {'.'.join(parents)} is not a mapping")
    if value is None:
        node.pop(last, None)
        return
    if last in node and node[last] is not None:
        old = node[last]
        both_numbers = _is_number(old) and _is_number(value)
        if not both_numbers and type(old) is not type(value):
            raise ConfigError(
                f"{source}: override {item!r}: {key_path} is {type(old).__name__}, got {type(value).__name__}"
            )
    node[last] = value


def _is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def validate(cfg: dict[str, Any], source: str = "<config>") -> None:
    """Check every section against the schema; raise ConfigError naming the key path."""
    model_key = model_section_name(cfg, source)
    allowed_top = {"name", "labels", "input_val", "input_train", model_key}
    for key in cfg:
        if key not in allowed_top:
            raise ConfigError(f"{source}: unknown key {key!r} (expected one of {sorted(allowed_top)})")
    labels = cfg.get("labels")
    if not isinstance(labels, list) or not labels:
        raise ConfigError(f"{source}: labels: must be a non-empty list of one-character strings")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or len(label) != 1:
            raise ConfigError(f"{source}: labels[{i}]: must be a one-character string, got {label!r}")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{source}: labels: duplicate entries")
    for split in ("input_val", "input_train"):
        if split not in cfg:
            continue
        sec = cfg[split]
        if not isinstance(sec, dict):
            raise ConfigError(f"{source}: {split}: must be a mapping")
        for key in sec:
            if key not in ("audio_dataset", "filterbank_features"):
                raise ConfigError(f"{source}: {split}.{key}: unknown key")
        if "audio_dataset" in sec:
            _check(sec["audio_dataset"], AUDIO_DATASET, f"{split}.audio_dataset", source)
        if "filterbank_features" in sec:
            _check(sec["filterbank_features"], FILTERBANK_FEATURES, f"{split}.filterbank_features", source)
        if "audio_dataset" in sec and "filterbank_features" in sec:
            ds, fb = section(cfg, split, "audio_dataset"), section(cfg, split, "filterbank_features")
            for key in CROSS_CHECKED:
                if ds[key] != fb[key]:
                    raise ConfigError(
                        f"{source}: {split}: {key} differs between audio_dataset ({ds[key]}) "
                        f"and filterbank_features ({fb[key]})"
                    )
        _check_ranges(cfg, split, source)
    model = cfg[model_key]
    if not isinstance(model, dict):
        raise ConfigError(f"{source}: {model_key}: must be a mapping")
    for key in model:
        if key not in ("encoder", "decoder"):
            raise ConfigError(f"{source}: {model_key}.{key}: unknown key")
    for key in ("encoder", "decoder"):
        if key not in model:
            raise ConfigError(f"{source}: {model_key}.{key}: missing")
    _check(model["encoder"], ENCODER, f"{model_key}.encoder", source)
    _check(model["decoder"], DECODER, f"{model_key}.decoder", source)
    blocks = model["encoder"].get("blocks", [])
    if not blocks:
        raise ConfigError(f"{source}: {model_key}.encoder.blocks: at least one block is needed")
    for i, block in enumerate(blocks):
        where = f"{model_key}.encoder.blocks[{i}]"
        _check(block, BLOCK, where, source)
        for key in ("kernel_size", "stride", "dilation"):
            value = block.get(key, BLOCK[key][1])
            if len(value) != 1 or not isinstance(value[0], int) or isinstance(value[0], bool) or value[0] < 1:
                raise ConfigError(f"{source}: {where}.{key}: must be a one-element list of a positive int")
        stride, dilation = block.get("stride", [1])[0], block.get("dilation", [1])[0]
        if stride > 1 and dilation > 1:
            raise ConfigError(f"{source}: {where}: stride and dilation cannot both exceed 1")
        if not 0 <= block.get("dropout", 0.2) < 1:
            raise ConfigError(f"{source}: {where}.dropout: must be in [0, 1)")
    if model["encoder"].get("frame_splicing", 1) != 1:
        raise ConfigError(f"{source}: {model_key}.encoder.frame_splicing: only 1 is supported")


def model_section_name(cfg: dict[str, Any], source: str = "<config>") -> str:
    """`jasper` or `quartznet`: the key that holds encoder and decoder."""
    present = [k for k in MODEL_KEYS if k in cfg]
    if len(present) != 1:
        raise ConfigError(f"{source}: exactly one of {MODEL_KEYS} must be present, found {present}")
    return present[0]


def _check(values: Any, schema: dict[str, tuple], where: str, source: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {where}: must be a mapping, got {type(values).__name__}")
    for key, value in values.items():
        if key not in schema:
            raise ConfigError(f"{source}: {where}.{key}: unknown key (allowed: {', '.join(schema)})")
        types, _default, *nested = schema[key]
        types = types if isinstance(types, tuple) else (types,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            names = "/".join("null" if t is _NONE else t.__name__ for t in types)
            raise ConfigError(f"{source}: {where}.{key}: expected {names}, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"{source}: {where}.{key}: {value!r} is not one of {sorted(CHOICES[key])}")
        if nested and value is not None:
            _check(value, nested[0], f"{where}.{key}", source)
    for key in REQUIRED & schema.keys():
        if key not in values:
            raise ConfigError(f"{source}: {where}.{key}: required")


def _check_ranges(cfg: dict[str, Any], split: str, source: str) -> None:
    sec = cfg[split]
    speed = sec.get("audio_dataset", {}).get("speed_perturbation")
    if speed:
        sp = fill(speed, SPEED_PERTURBATION)
        if not 0 < sp["min_rate"] < sp["max_rate"]:
            raise ConfigError(
                f"{source}: {split}.audio_dataset.speed_perturbation: need 0 < min_rate < max_rate"
            )
    fb = sec.get("filterbank_features", {})
    spec = fb.get("spec_augment")
    if spec:
        sa = fill(spec, SPEC_AUGMENT)
        for lo, hi in (("min_freq", "max_freq"), ("min_time", "max_time")):
            if not 0 <= sa[lo] <= sa[hi]:
                raise ConfigError(
                    f"{source}: {split}.filterbank_features.spec_augment: need 0 <= {lo} <= {hi}"
                )
    vtlp = fb.get("vtlp")
    if vtlp:
        v = fill(vtlp, VTLP)
        if not 0 < v["min_warp"] <= v["max_warp"]:
            raise ConfigError(f"{source}: {split}.filterbank_features.vtlp: need 0 < min_warp <= max_warp")
    if fb.get("frame_splicing", 1) != 1:
        raise ConfigError(f"{source}: {split}.filterbank_features.frame_splicing: only 1 is supported")


def fill(values: dict[str, Any] | None, schema: dict[str, tuple]) -> dict[str, Any]:
    """Return `values` with every absent schema key set to its default (nested sections too)."""
    out: dict[str, Any] = {}
    values = values or {}
    for key, (_types, default, *nested) in schema.items():
        value = values.get(key, default)
        if nested and value is not None:
            value = fill(value, nested[0])
        out[key] = value
    return out


def section(cfg: dict[str, Any], split: str, name: str) -> dict[str, Any]:
    """One of `input_{train,val}.{audio_dataset,filterbank_features}` with defaults filled in."""
    schema = {"audio_dataset": AUDIO_DATASET, "filterbank_features": FILTERBANK_FEATURES}[name]
    return fill(cfg.get(split, {}).get(name), schema)


def model_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The encoder/decoder section with defaults filled, `n_classes` set and blocks normalised."""
    sec = cfg[model_section_name(cfg)]
    encoder = fill({k: v for k, v in sec["encoder"].items() if k != "blocks"}, ENCODER)
    encoder["blocks"] = [fill(b, BLOCK) for b in sec["encoder"]["blocks"]]
    decoder = fill(sec["decoder"], DECODER)
    decoder["n_classes"] = len(cfg["labels"]) + 1
    return {"encoder": encoder, "decoder": decoder}
