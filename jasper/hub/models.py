"""Published models by name, `.nemo` files and URLs: one reader for every place a checkpoint is taken.

`read_checkpoint(spec)` accepts
- a catalogue name (`jasper models` lists them): downloaded into `$XDG_CACHE_HOME/jasper/models`
  on first use, then used from the cache with no network;
- an `http(s)://` or `file://` URL: downloaded into the same cache under its file name;
- a path: a DeepLearningExamples/jasper `.pt` checkpoint, or a NeMo `.nemo` archive.
It returns a checkpoint dict as `jasper.checkpoint.read` does, with `config` filled in (from the
`.nemo`, or from `configs/` for a DeepLearningExamples checkpoint, which holds none) and `published`
naming the catalogue entry, so a model fine-tuned from it carries where it came from.

Downloads honour `JASPER_MODEL_MIRROR`: a base URL (or `file://` folder) that holds the catalogue's
files under their cache names, for sites without access to the hosts. A file whose checksum the
catalogue does not give is hashed on first download (SHA-256, kept beside it) and checked against
that on every later load. NGC serves a model as a redirect to a short-lived signed URL, sometimes
as a zip archive: every retry resolves the URL again, and an archive is unpacked to the
checkpoint it holds.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jasper import checkpoint, config
from jasper.checkpoint import CheckpointError
from jasper.hub import nemo
from jasper.hub.download import DownloadError, download, sha256sum

MIRROR_VARIABLE = "JASPER_MODEL_MIRROR"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NGC = "https://api.ngc.nvidia.com/v2/models/nvidia"
NEMO_WER = "NeMo's ASR scores table"


@dataclass(frozen=True)
class PublishedModel:
    """One published checkpoint: where it comes from and what it needs to run."""

    name: str
    architecture: str
    source: str  # who publishes it
    url: str | None  # None: the host publishes no stable file URL; the cache or the mirror must have it
    page: str  # where a person reads about it (and downloads it by hand)
    file: str  # its name in the cache and on a mirror
    wer: str  # as its publisher reports it
    licence: str
    language: str = "en"
    member: str | None = None  # the checkpoint inside a zip archive
    sha256: str | None = None
    size: int | None = None
    config: str | None = None  # configs/ file of a checkpoint that carries no config
    ema: bool = False  # the published weights are the checkpoint's `ema_state_dict`
    nemo_frontend: str | None = None  # the NeMo release that trained it ("1.x"): its front end

    @property
    def checkpoint_file(self) -> str:
        return self.member or self.file


def _nemo(name: str, version: str, wer: str, language: str = "en", folder: str = "nemo") -> PublishedModel:
    return PublishedModel(
        name=name,
        architecture="Jasper 10x5 DR" if "jasper" in name.lower() else "QuartzNet 15x5",
        source="NVIDIA NeMo",
        url=f"{NGC}/{folder}/{name}/versions/{version}/files/{name}.nemo",
        page=f"https://catalog.ngc.nvidia.com/orgs/nvidia/teams/nemo/models/{name}",
        file=f"{name}.nemo",
        wer=wer,
        licence="NGC model card",
        language=language,
        nemo_frontend="1.x",
    )


_LANGUAGES = {
    "ca": "6.0",
    "de": "11.78",
    "es": "12.97",
    "fr": "14.01",
    "it": "15.22",
    "pl": "14",
    "ru": "16.23",
}
CATALOGUE: dict[str, PublishedModel] = {
    m.name: m
    for m in [
        PublishedModel(
            name="dle_jasper10x5dr",
            architecture="Jasper 10x5 DR",
            source="NVIDIA DeepLearningExamples",
            url=None,  # NGC `nvidia/jasper_pyt_ckpt_amp`: DeepLearningExamples links the page only
            page="https://ngc.nvidia.com/catalog/models/nvidia:jasper_pyt_ckpt_amp",
            file="nvidia_jasper_210205.pt",
            wer="3.20 dev-clean, 9.78 dev-other, 3.41 test-clean, 9.71 test-other (greedy; its README)",
            licence="NGC model card",
            config="jasper10x5dr_speedp-online_speca.yaml",
            ema=True,
        ),
        PublishedModel(
            name="dle_jasper10x5dr_fp16",
            architecture="Jasper 10x5 DR",
            source="NVIDIA DeepLearningExamples (2019)",
            url=f"{NGC}/jasperpyt_fp16/versions/1/files/jasper_fp16.pt",
            page="https://ngc.nvidia.com/catalog/models/nvidia:jasperpyt_fp16",
            file="jasper_fp16.pt",
            size=2_661_855_989,
            wer="3.51 dev-clean, 11.14 dev-other, 3.74 test-clean, 11.06 test-other (greedy; 2019 README)",
            licence="NGC model card",
            config="jasper10x5dr_speedp-online_speca.yaml",
        ),
        PublishedModel(
            name="dle_quartznet15x5",
            architecture="QuartzNet 15x5",
            source="NVIDIA DeepLearningExamples",
            url=f"{NGC}/quartznet_pyt_ckpt_amp/versions/21.03.0/zip",
            page="https://ngc.nvidia.com/catalog/models/nvidia:quartznet_pyt_ckpt_amp",
            file="quartznet_pyt_ckpt_amp_21.03.0.zip",
            member="nvidia_quartznet_210504.pt",
            wer="3.47 dev-clean, 10.84 dev-other, 3.69 test-clean, 10.69 test-other (greedy; its README)",
            licence="NGC model card",
            config="quartznet15x5_speedp-online-1.15_speca.yaml",
        ),
        _nemo("stt_en_jasper10x5dr", "1.0.0rc1", f"3.74 dev-clean, 10.21 dev-other ({NEMO_WER})"),
        _nemo("stt_en_quartznet15x5", "1.0.0rc1", f"4.38 dev-clean, 11.3 dev-other ({NEMO_WER})"),
        _nemo(
            "QuartzNet15x5Base-En",
            "1.0.0a5",
            "3.79 dev-clean, 10.05 dev-other (NeMo's model list; LibriSpeech, Common Voice, WSJ, Fisher, "
            "Switchboard, NSC)",
            folder="nemospeechmodels",
        ),
        *[
            _nemo(f"stt_{lang}_quartznet15x5", "1.0.0rc1", f"{wer} Common Voice dev ({NEMO_WER})", lang)
            for lang, wer in _LANGUAGES.items()
        ],
        _nemo("stt_zh_quartznet15x5", "1.0.0rc1", "not published", "zh"),
    ]
}


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/jasper/models` (else `~/.cache/jasper/models`), read at each call."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jasper" / "models"


def cached_path(model: PublishedModel) -> Path:
    """Where the model's checkpoint lies once it is in the cache (an archive's member, unpacked)."""
    return cache_dir() / model.checkpoint_file


def is_url(spec: str) -> bool:
    return urlsplit(spec).scheme in ("http", "https", "file")


def fetch(model: PublishedModel) -> Path:
    """The model's checkpoint in the cache, downloaded (from the mirror when one is set) if absent."""
    target, download_to = cached_path(model), cache_dir() / model.file
    if not target.is_file() and not download_to.is_file():  # (an archive here is unpacked, not fetched)
        mirror = os.environ.get(MIRROR_VARIABLE)
        url = f"{mirror.rstrip('/')}/{model.file}" if mirror else model.url
        if url is None:
            raise CheckpointError(
                f"{model.name}: {model.source} publishes no direct download URL; download {model.file} "
                f"from {model.page} and put it at {download_to}, or set {MIRROR_VARIABLE}"
            )
        _download(url, download_to, model)
    if model.member and not target.is_file():
        _unpack(download_to, model.member, target)
    _verify(target, model.sha256 if not model.member else None)
    return target


def _download(url: str, dest: Path, model: PublishedModel | None) -> None:
    def check(part: Path) -> None:
        if model is not None and model.size is not None and part.stat().st_size != model.size:
            raise DownloadError(
                f"{url}: {part.stat().st_size} bytes, expected {model.size}; the file was removed"
            )
        actual = sha256sum(part)
        if model is not None and model.sha256 and actual != model.sha256:
            raise DownloadError(f"{url}: SHA-256 {actual}, expected {model.sha256}; the file was removed")
        _sha_file(dest).write_text(actual + "\n")

    try:
        download(url, dest, retries=3, check=check)
    except DownloadError as e:
        raise CheckpointError(
            f"cannot download {dest.name} ({e}); put the file at {dest} by hand, or set {MIRROR_VARIABLE} "
            "to a server or folder that holds it"
        ) from None


def _sha_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verify(path: Path, expected: str | None) -> None:
    """Check a cached file against the catalogue's SHA-256, else against the one recorded at download."""
    recorded = _sha_file(path)
    if expected is None and not recorded.is_file():
        recorded.write_text(sha256sum(path) + "\n")  # put in the cache by hand: recorded from now on
        return
    expected = expected or recorded.read_text().strip()
    actual = sha256sum(path)
    if actual != expected:
        raise CheckpointError(
            f"{path}: SHA-256 {actual} differs from {expected}: the cached file changed; delete it to "
            "download it again"
        )


def _unpack(archive: Path, member: str, target: Path) -> None:
    """Extract `member` (found by its file name anywhere in the zip) to `target`, atomically."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if Path(n).name == member]
            if not names:
                raise CheckpointError(f"{archive}: holds no {member} (it has {', '.join(zf.namelist()[:5])})")
            part = target.with_name(target.name + ".part")
            with zf.open(names[0]) as src, open(part, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{archive}: not a zip archive ({e}); delete it to download it again") from None
    _sha_file(target).write_text(sha256sum(part) + "\n")
    part.replace(target)


def resolve(spec: str | Path) -> tuple[Path, PublishedModel | None]:
    """A local file for a catalogue name, URL or path (downloading what is not cached)."""
    text = str(spec)
    if text in CATALOGUE:
        return fetch(CATALOGUE[text]), CATALOGUE[text]
    if is_url(text):
        name = Path(urlsplit(text).path).name or "model"
        dest = cache_dir() / "urls" / hashlib.sha1(text.encode()).hexdigest()[:12] / name
        if not dest.is_file():
            _download(text, dest, None)
        _verify(dest, None)
        return dest, None
    path = Path(spec)
    if not path.exists():
        raise CheckpointError(f"{spec}: no such file, and not a model name (`jasper models` lists them)")
    return path, None


def read_checkpoint(spec: str | Path) -> dict[str, Any]:
    """A checkpoint dict with its `config`, for a catalogue name, a URL or a path (module docstring)."""
    path, model = resolve(spec)
    if nemo.is_nemo(path):
        state = nemo.read(path, frontend=model.nemo_frontend if model else None)
    else:
        state = checkpoint.read(path)
        if model is not None and model.config and not isinstance(state.get("config"), dict):
            state["config"] = config.load(CONFIGS / model.config)
        if model is not None and model.ema and state.get("ema_state_dict"):
            state["state_dict"] = state["ema_state_dict"]
    if model is not None:
        state["published"] = {"name": model.name, "source": model.source, "page": model.page}
    return state


def add_model_arguments(parser: argparse.ArgumentParser, optional: str = "") -> None:
    """`--model NAME|PATH|URL`, the reference's `--ckpt` (the same) and `--model_config`, for every
    command that takes a trained model; `optional` says what happens without one."""
    parser.add_argument(
        "--model",
        metavar="NAME|PATH|URL",
        default=None,
        help="the weights: a published model (`jasper models` lists them; downloaded once into the cache), "
        f"a .pt or .nemo file, or a URL{optional}",
    )
    parser.add_argument("--ckpt", default=None, help="the reference's flag for the same; give one of the two")
    parser.add_argument(
        "--model_config",
        default=None,
        help="model config YAML (reference schema); default: the config the model carries",
    )


def model_spec(args: argparse.Namespace, required: bool = False) -> str | None:
    """What --model or --ckpt names; both at once is an error, and so is neither when `required`."""
    model, ckpt = getattr(args, "model", None), getattr(args, "ckpt", None)
    if model and ckpt:
        raise config.ConfigError("--model and --ckpt both name the weights: give one of them")
    if required and not (model or ckpt):
        raise config.ConfigError("no model: give --model NAME|PATH|URL (or --ckpt)")
    return model or ckpt


def config_of(
    state: dict[str, Any] | None, model_config: str | Path | None, overrides: Any = (), source: str = ""
) -> dict[str, Any]:
    """The model's config: `model_config` when given (it wins), else the checkpoint's own `config`;
    `--override_config` items applied either way, then validated."""
    if model_config is not None:
        return config.load(model_config, overrides)
    if state is not None and isinstance(state.get("config"), dict):
        where = f"{source} [config]"
        cfg = copy.deepcopy(state["config"])
        for item in overrides:
            config.apply_override(cfg, item, source=where)
        config.validate(cfg, source=where)
        return cfg
    if state is None:
        raise config.ConfigError("no model: give --model (or --ckpt), or --model_config for random weights")
    raise config.ConfigError(
        f"{source}: the checkpoint has no 'config' entry; "
        "pass --model_config with the YAML it was trained with"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--download", nargs="+", metavar="NAME", default=[], help="download these models into the cache"
    )


def run(args: argparse.Namespace) -> int:
    """`jasper models`: the catalogue, and whether each model is in the cache."""
    for name in args.download:
        if name not in CATALOGUE:
            raise CheckpointError(f"{name}: not a model name; `jasper models` lists them")
        print(f"{name}: {fetch(CATALOGUE[name])}")
    if args.download:
        return 0
    rows = [
        ("name", "architecture", "lang", "source", "file", "size", "licence", "cached", "reported WER (%)")
    ]
    for m in CATALOGUE.values():
        path = cached_path(m)
        size = m.size or (path.stat().st_size if path.is_file() else None)
        cached = "yes" if path.is_file() else "no"
        shown = f"{size / 1e6:.0f} MB" if size else "unpublished"
        rows.append((m.name, m.architecture, m.language, m.source, m.file, shown, m.licence, cached, m.wer))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    print("\nsources:")
    for m in CATALOGUE.values():
        print(f"  {m.name}: {m.url or 'no direct URL, download by hand from the page'}  (page: {m.page})")
    print(f"\ncache: {cache_dir()}; a mirror: ${MIRROR_VARIABLE}=BASE_URL serving the files by name")
    return 0
