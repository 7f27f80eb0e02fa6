"""Config loading: every shipped config loads, anchors become copies, errors name file and key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from jasper import config
from jasper.config import ConfigError

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))
CANONICAL = Path(__file__).resolve().parents[1] / "configs" / "jasper10x5dr_speedp-online_speca.yaml"
REFERENCE_NAMES = {
    "jasper10x5dr_speca",
    "jasper10x5dr_speedp-offline",
    "jasper10x5dr_speedp-offline_speca",
    "jasper10x5dr_speedp-offline_speca_nomask",
    "jasper10x5dr_speedp-online-discrete",
    "jasper10x5dr_speedp-online-discrete_speca",
    "jasper10x5dr_speedp-online_speca",
    "jasper10x5dr_speedp-online_train-benchmark",
    "quartznet15x5_speedp-online-1.15_speca",
    "quartznet15x5_speedp-online-1.15_speca_drop0.2",
}


def test_reference_configs_present() -> None:
    assert REFERENCE_NAMES <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads(path: Path) -> None:
    cfg = config.load(path)
    labels = 34 if path.stem.endswith("_es") else 28  # the Spanish alphabet: a-z and á é í ñ ó ú ü
    assert len(cfg["labels"]) == labels
    assert config.model_config(cfg)["decoder"]["n_classes"] == labels + 1


def test_canonical_values() -> None:
    cfg = config.load(CANONICAL)
    train_ds = config.section(cfg, "input_train", "audio_dataset")
    assert train_ds["max_duration"] == 16.7 and train_ds["ignore_offline_speed_perturbation"] is True
    assert (
        train_ds["speed_perturbation"]["min_rate"] == 0.85
        and train_ds["speed_perturbation"]["max_rate"] == 1.15
    )
    val_ds = config.section(cfg, "input_val", "audio_dataset")
    assert val_ds["max_duration"] == math.inf and val_ds["min_duration"] == 0.1 and val_ds["trim_silence"]
    fb = config.section(cfg, "input_train", "filterbank_features")
    assert fb["spec_augment"] == {
        "freq_masks": 2,
        "min_freq": 0,
        "max_freq": 20,
        "time_masks": 2,
        "min_time": 0,
        "max_time": 75,
    }
    assert (fb["n_fft"], fb["pad_align"], fb["window"], fb["dither"]) == (512, 16, "hann", 1e-5)
    blocks = config.model_config(cfg)["encoder"]["blocks"]
    assert [b["filters"] for b in blocks] == [
        256,
        256,
        256,
        384,
        384,
        512,
        512,
        640,
        640,
        768,
        768,
        896,
        1024,
    ]
    assert blocks[11]["dilation"] == [2] and blocks[0]["stride"] == [2]


def test_merge_keys_become_independent_copies() -> None:
    cfg = config.load(CANONICAL)
    cfg["input_train"]["audio_dataset"]["trim_silence"] = False
    assert cfg["input_val"]["audio_dataset"]["trim_silence"] is True
    blocks = cfg["jasper"]["encoder"]["blocks"]
    blocks[1]["filters"] = 1
    assert blocks[2]["filters"] == 256


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(CANONICAL.read_text() + text)
    return path


def _edited(tmp_path: Path, old: str, new: str, name: str = "t.yaml") -> Path:
    """The canonical config with the first `old` replaced by `new`, written to `tmp_path / name`."""
    text = CANONICAL.read_text()
    assert old in text, old
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


def test_unknown_key_names_file_and_path(tmp_path: Path) -> None:
    path = _edited(
        tmp_path, "    trim_silence: true\n", "    trim_silence: true\n    trim_silense: 1\n", "typo.yaml"
    )
    with pytest.raises(ConfigError, match=r"typo\.yaml: input_val\.audio_dataset\.trim_silense: unknown key"):
        config.load(path)


def test_wrong_type_names_key(tmp_path: Path) -> None:
    path = _edited(tmp_path, "n_fft: 512", "n_fft: '512'")
    with pytest.raises(ConfigError, match=r"input_val\.filterbank_features\.n_fft: expected int/null"):
        config.load(path)


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    path = _edited(tmp_path, "pad_align: 16", "pad_align: true")
    with pytest.raises(ConfigError, match="pad_align"):
        config.load(path)


def test_block_error_names_index(tmp_path: Path) -> None:
    path = _edited(tmp_path, "kernel_size: [13]", "kernel_size: 13")
    with pytest.raises(ConfigError, match=r"jasper\.encoder\.blocks\[3\]\.kernel_size"):
        config.load(path)


def test_unknown_top_level_and_split_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'extra'"):
        config.load(_write(tmp_path, "extra: 1\n"))
    path = _edited(tmp_path, "input_val:\n", "input_val:\n  foo: {}\n")
    with pytest.raises(ConfigError, match=r"input_val\.foo: unknown key"):
        config.load(path)


def test_cross_check_sample_rate(tmp_path: Path) -> None:
    path = _edited(tmp_path, "    sample_rate: *sample_rate\n", "    sample_rate: 8000\n")
    with pytest.raises(ConfigError, match="sample_rate differs"):
        config.load(path)


def test_missing_file_and_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config"):
        config.load(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="TOML"):
        config.load(tmp_path / "old.toml")


def test_overrides() -> None:
    cfg = config.load(
        CANONICAL,
        [
            "input_val.audio_dataset.max_duration=7",
            "input_val.filterbank_features.max_duration=7.0",
            "input_val.audio_dataset.pad_to_max_duration=True",
            "input_val.filterbank_features.pad_to_max_duration=True",
            "input_train.audio_dataset.speed_perturbation.min_rate=0.9",
            "name=a=b",
        ],
    )
    assert cfg["input_val"]["audio_dataset"]["max_duration"] == 7
    assert cfg["input_val"]["filterbank_features"]["pad_to_max_duration"] is True
    assert cfg["input_train"]["audio_dataset"]["speed_perturbation"]["min_rate"] == 0.9
    assert cfg["name"] == "a=b"


def test_override_none_removes_an_optional_key() -> None:
    cfg = config.load(
        CANONICAL,
        [
            "input_train.audio_dataset.speed_perturbation=None",
            "input_train.filterbank_features.spec_augment=None",
        ],
    )
    assert "speed_perturbation" not in cfg["input_train"]["audio_dataset"]
    assert "spec_augment" not in cfg["input_train"]["filterbank_features"]
    with pytest.raises(ConfigError, match="labels"):
        config.load(CANONICAL, ["labels=None"])


def test_override_errors() -> None:
    with pytest.raises(ConfigError, match="no key input_val.nothing"):
        config.load(CANONICAL, ["input_val.nothing.x=1"])
    with pytest.raises(ConfigError, match="is bool, got str"):
        config.load(CANONICAL, ["input_val.audio_dataset.trim_silence=maybe"])
    with pytest.raises(ConfigError, match="key.path=value"):
        config.load(CANONICAL, ["justakey"])


def test_schema_defaults_match_constructors() -> None:
    """The schema's defaults are the ones the modules use when a key is absent."""
    import inspect

    from jasper.features import CutoutAugment, FilterbankFeatures, SpecAugment

    for cls, schema in (
        (FilterbankFeatures, config.FILTERBANK_FEATURES),
        (SpecAugment, config.SPEC_AUGMENT),
        (CutoutAugment, config.CUTOUT_AUGMENT),
    ):
        params = inspect.signature(cls.__init__).parameters
        for key, (_types, default, *_nested) in schema.items():
            assert params[key].default == default, f"{cls.__name__}.{key}"


def test_vtlp_range_is_checked(tmp_path: Path) -> None:
    path = _edited(
        tmp_path, "    spec_augment:\n", "    vtlp: {min_warp: 1.2, max_warp: 0.9}\n    spec_augment:\n"
    )
    with pytest.raises(ConfigError, match=r"input_train\.filterbank_features\.vtlp: need 0 < min_warp"):
        config.load(path)
