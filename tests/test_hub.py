"""Published models by name: the catalogue, downloads into the cache, the mirror, and the offline path.

Every download here comes from a `conftest.FileServer` on 127.0.0.1 serving fixture files (no
other host is reached): resume after a cut connection, NGC's redirects to one-use signed URLs,
a server that ignores Range, a zip archive unpacked to its checkpoint, a checksum mismatch, and a
cache hit with the network unreachable.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import REPO, file_servers, require_shared

from jasper.checkpoint import CheckpointError
from jasper.cli import main
from jasper.hub import models
from jasper.hub.models import CATALOGUE, MIRROR_VARIABLE, PublishedModel, read_checkpoint
from jasper.model import Jasper

NEMO = REPO / "tests" / "fixtures" / "nemo" / "quartznet_small.nemo"
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connection refused


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(MIRROR_VARIABLE, raising=False)
    return tmp_path / "cache" / "jasper" / "models"


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """Files a host serves: a .nemo, a DeepLearningExamples-style .pt (tiny config) and its zip."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(NEMO, root / "stt_en_quartznet15x5.nemo")
    from jasper import config

    cfg = config.load(REPO / "configs" / "tiny.yaml")
    torch.manual_seed(0)
    state = Jasper.from_config(cfg).state_dict()
    torch.save({"state_dict": state, "ema_state_dict": state, "epoch": 1}, root / "nvidia_tiny.pt")
    with zipfile.ZipFile(root / "tiny_ckpt.zip", "w") as zf:
        zf.write(root / "nvidia_tiny.pt", "tiny_ckpt_v1/nvidia_tiny.pt")
    return root


def entry(name: str, url: str | None, **fields: object) -> PublishedModel:
    return PublishedModel(
        name=name, architecture="test", source="test", url=url, page="http://127.0.0.1/", file=name,
        wer="-", licence="-", **fields,
    )  # fmt: skip


def test_the_catalogue_lists_thirteen_models_with_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert len(CATALOGUE) >= 13
    for m in CATALOGUE.values():
        assert m.name in out and m.page in out and (m.url is None or m.url in out)
    for name in ("dle_jasper10x5dr", "dle_quartznet15x5", "stt_en_jasper10x5dr", "QuartzNet15x5Base-En"):
        assert name in CATALOGUE
    languages = ("ca", "de", "es", "fr", "it", "pl", "ru", "zh")
    assert {f"stt_{x}_quartznet15x5" for x in languages} <= set(CATALOGUE)


def test_resume_after_a_cut_resolving_the_signed_url_again(www: Path, monkeypatch, cache: Path) -> None:
    with file_servers(www) as start:
        server = start(cut_after=100_000, signed=True)
        model = replace(CATALOGUE["stt_en_quartznet15x5"], url=server.url + "ngc/stt_en_quartznet15x5.nemo")
        monkeypatch.setitem(CATALOGUE, model.name, model)
        state = read_checkpoint(model.name)
    assert [(r[1], r[2]) for r in server.requests] == [(None, 200), ("bytes=100000-", 206)]
    assert len({r[0] for r in server.requests}) == 2  # two different signed URLs
    assert (cache / model.file).read_bytes() == NEMO.read_bytes()
    recorded = (cache / f"{model.file}.sha256").read_text().strip()
    assert recorded == hashlib.sha256(NEMO.read_bytes()).hexdigest()
    assert state["published"]["name"] == model.name and state["config"]["labels"][1] == "a"


def test_a_server_that_ignores_range_restarts_the_file_cleanly(www: Path, cache: Path) -> None:
    with file_servers(www) as start:
        server = start(cut_after=50_000, ranges=False)
        model = entry("stt_en_quartznet15x5.nemo", server.url + "stt_en_quartznet15x5.nemo")
        assert models.fetch(model).read_bytes() == NEMO.read_bytes()
    assert [r[2] for r in server.requests] == [200, 200]


def test_a_zip_is_unpacked_to_its_checkpoint_with_its_config(www: Path, monkeypatch, cache: Path) -> None:
    with file_servers(www) as start:
        server = start(signed=True)
        url = server.url + "ngc/tiny_ckpt.zip"
        model = entry("tiny_ckpt.zip", url, member="nvidia_tiny.pt", config="tiny.yaml")
        monkeypatch.setitem(CATALOGUE, "dle_tiny", replace(model, name="dle_tiny", ema=True))
        state = read_checkpoint("dle_tiny")
    assert (cache / "nvidia_tiny.pt").is_file() and state["config"]["labels"]
    Jasper.from_config(state["config"]).load_state_dict(state["state_dict"])


def test_a_checksum_mismatch_is_refused_and_the_partial_file_removed(www: Path, cache: Path) -> None:
    with file_servers(www) as start:
        server = start()
        model = entry("stt_en_quartznet15x5.nemo", server.url + "stt_en_quartznet15x5.nemo", sha256="0" * 64)
        with pytest.raises(CheckpointError, match="SHA-256 .* expected 0000"):
            models.fetch(model)
    assert not [p.name for p in cache.glob("*") if p.suffix in (".nemo", ".part")]


def test_a_changed_cached_file_is_refused(www: Path, cache: Path) -> None:
    with file_servers(www) as start:
        model = entry("stt_en_quartznet15x5.nemo", start().url + "stt_en_quartznet15x5.nemo")
        path = models.fetch(model)
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(CheckpointError, match="the cached file changed"):
        models.fetch(model)


def test_the_cache_is_used_with_no_network(www: Path, monkeypatch, cache: Path) -> None:
    model = replace(CATALOGUE["stt_en_quartznet15x5"], url=UNREACHABLE + "stt_en_quartznet15x5.nemo")
    monkeypatch.setitem(CATALOGUE, model.name, model)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(model.name)
    message = str(error.value)
    assert "\n" not in message and f"put the file at {cache / model.file}" in message
    assert MIRROR_VARIABLE in message
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(NEMO, cache / model.file)  # put there by hand, as the message says
    assert read_checkpoint(model.name)["config"]["labels"]
    assert read_checkpoint(model.name)["nemo"]["frontend"] == "1.x"  # the catalogue's front end


def test_a_model_without_a_url_says_where_to_get_it(capsys: pytest.CaptureFixture[str]) -> None:
    clip = str(REPO / "tests" / "fixtures" / "nemo" / "reference.pt")
    assert main(["transcribe", "--model", "dle_jasper10x5dr", clip]) == 2
    err = capsys.readouterr().err
    assert "nvidia_jasper_210205.pt" in err and "jasper_pyt_ckpt_amp" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_transcribe_a_published_name_through_the_mirror(
    www: Path, monkeypatch, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = require_shared("data", "librispeech-real-mini")
    clip = str(next(root.glob("test-clean/*/*/*.flac")))
    tiny = replace(CATALOGUE["dle_jasper10x5dr"], file="nvidia_tiny.pt", config="tiny.yaml")
    monkeypatch.setitem(CATALOGUE, tiny.name, tiny)
    with file_servers(www) as start:
        monkeypatch.setenv(MIRROR_VARIABLE, start().url)
        for name in ("stt_en_quartznet15x5", "dle_jasper10x5dr"):
            assert main(["transcribe", "--model", name, "--device", "cpu", clip]) == 0
            assert capsys.readouterr().out.startswith(clip + "\t")
    monkeypatch.setenv(MIRROR_VARIABLE, UNREACHABLE)  # cached now: no network needed
    assert main(["transcribe", "--model", "stt_en_quartznet15x5", "--device", "cpu", clip]) == 0
    assert main(["models"]) == 0
    assert "stt_en_quartznet15x5" in capsys.readouterr().out


def test_a_url_downloads_into_the_cache(www: Path, cache: Path) -> None:
    with file_servers(www) as start:
        url = start().url + "stt_en_quartznet15x5.nemo"
        first = read_checkpoint(url)
    second = read_checkpoint(url)  # the server is gone: from the cache
    assert first["config"] == second["config"]
    assert len(list((cache / "urls").glob("*/stt_en_quartznet15x5.nemo"))) == 1


def test_an_archive_put_in_the_cache_by_hand_is_unpacked(www: Path, monkeypatch, cache: Path) -> None:
    model = entry("tiny_ckpt.zip", None, member="nvidia_tiny.pt", config="tiny.yaml")
    monkeypatch.setitem(CATALOGUE, "dle_tiny", replace(model, name="dle_tiny"))
    with pytest.raises(CheckpointError, match="publishes no direct download URL"):
        read_checkpoint("dle_tiny")
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(www / "tiny_ckpt.zip", cache / "tiny_ckpt.zip")
    assert read_checkpoint("dle_tiny")["config"]["labels"] and (cache / "nvidia_tiny.pt").is_file()
