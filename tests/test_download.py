"""Tests for jasper.datasets.download against a real HTTP server on 127.0.0.1 (no mocks).

The archive is built from the real mini LibriSpeech set with the official tarballs' layout
(`LibriSpeech/<subset>/...`). The server (`conftest.FileServer`) counts requests and can drop the
connection part-way, ignore Range headers or omit Content-Length, to exercise resume, restart and
fatal checksums.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, file_servers, require_shared

from jasper.cli import main
from jasper.datasets import download

SUBSET = "test-clean"
ARCHIVE = f"{SUBSET}.tar.gz"
CUT_AT = 100_000  # bytes sent before the first connection is dropped


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tar.gz of the mini test-clean subset, laid out as the official one, and its MD5."""
    mini = require_shared("data", "librispeech-real-mini", SUBSET)
    www = tmp_path_factory.mktemp("www")
    path = www / ARCHIVE
    with tarfile.open(path, "w:gz") as tar:
        tar.add(mini, arcname=f"LibriSpeech/{SUBSET}")
    return path, hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def serve(archive: tuple[Path, str]) -> Iterator:
    with file_servers(archive[0].parent) as start:
        yield start


def write_list(path: Path, md5: str, name: str = ARCHIVE) -> Path:
    path.write_text(f"url,md5\n{name},{md5}\n")
    return path


def run_download(*argv: object) -> int:
    parser = argparse.ArgumentParser()
    download.add_arguments(parser)
    return download.run(parser.parse_args([str(a) for a in argv]))


def assert_extracted(extract_dir: Path) -> None:
    mini = require_shared("data", "librispeech-real-mini", SUBSET)
    sources = sorted(p.relative_to(mini) for p in mini.rglob("*") if p.is_file())
    assert len(sources) == 8  # 5 FLACs and 3 transcripts
    for rel in sources:
        assert (extract_dir / "LibriSpeech" / SUBSET / rel).read_bytes() == (mini / rel).read_bytes()


def test_bundled_list_has_the_official_archives() -> None:
    archives = download.read_archive_list(download.ARCHIVE_LIST)
    assert [a.subset for a in archives] == list(download.SUBSETS)
    assert {a.name: a.md5 for a in archives}["dev-clean.tar.gz"] == "42e2234ba48799c1f50f24a7926300a1"
    assert download.BASE_URL == "http://www.openslr.org/resources/12/"


def test_download_verify_extract_then_skip(tmp_path: Path, archive: tuple[Path, str], serve) -> None:
    server = serve()
    csv = write_list(tmp_path / "list.csv", archive[1])
    dest, extract_dir = tmp_path / "archives", tmp_path / "data"
    argv = [
        "data",
        "download",
        "--dest",
        dest,
        "--extract_dir",
        extract_dir,
        "--subsets",
        SUBSET,
        "--base_url",
        server.url,
        "--csv",
        csv,
    ]
    assert main([str(a) for a in argv]) == 0
    assert_extracted(extract_dir)
    assert (dest / ARCHIVE).read_bytes() == archive[0].read_bytes()
    assert (extract_dir / f"{ARCHIVE}.extracted").read_text().strip() == archive[1]
    assert len(server.requests) == 1

    assert main([str(a) for a in argv]) == 0  # done: no request
    (dest / ARCHIVE).unlink()  # even without the archive, the marker says the subset is there
    assert main([str(a) for a in argv]) == 0
    assert len(server.requests) == 1


def test_md5_mismatch_is_fatal_and_refetched_next_time(tmp_path: Path, archive, serve, capsys) -> None:
    server = serve()
    wrong = "0" * 32
    dest = tmp_path / "archives"
    common = ["--dest", dest, "--subsets", SUBSET, "--base_url", server.url]
    assert run_download(*common, "--csv", write_list(tmp_path / "bad.csv", wrong)) == 1
    err = capsys.readouterr().err
    assert f"{dest / ARCHIVE}: MD5 mismatch: expected {wrong}, got {archive[1]}" in err
    assert not (dest / ARCHIVE).exists() and (dest / f"{ARCHIVE}.corrupt").exists()
    assert not (dest / "LibriSpeech").exists() and not (dest / f"{ARCHIVE}.extracted").exists()

    assert run_download(*common, "--csv", write_list(tmp_path / "good.csv", archive[1])) == 0
    assert len(server.requests) == 2
    assert_extracted(dest)


def test_resume_after_dropped_connection(tmp_path: Path, archive, serve) -> None:
    server = serve(cut_after=CUT_AT)
    csv = write_list(tmp_path / "list.csv", archive[1])
    assert run_download("--dest", tmp_path, "--subsets", SUBSET, "--base_url", server.url, "--csv", csv) == 0
    assert [(r[1], r[2]) for r in server.requests] == [(None, 200), (f"bytes={CUT_AT}-", 206)]
    assert (tmp_path / ARCHIVE).read_bytes() == archive[0].read_bytes()
    assert not (tmp_path / f"{ARCHIVE}.part").exists()
    assert_extracted(tmp_path)


def test_restart_when_server_ignores_range(tmp_path: Path, archive, serve) -> None:
    server = serve(cut_after=CUT_AT, ranges=False)
    csv = write_list(tmp_path / "list.csv", archive[1])
    assert run_download("--dest", tmp_path, "--subsets", SUBSET, "--base_url", server.url, "--csv", csv) == 0
    assert [(r[1], r[2]) for r in server.requests] == [(None, 200), (f"bytes={CUT_AT}-", 200)]
    assert (tmp_path / ARCHIVE).read_bytes() == archive[0].read_bytes()


def test_no_content_length_and_file_urls(tmp_path: Path, archive, serve) -> None:
    server = serve(content_length=False)
    download.download(server.url + ARCHIVE, tmp_path / "http" / ARCHIVE)
    download.download(archive[0].as_uri(), tmp_path / "file" / ARCHIVE)
    for sub in ("http", "file"):
        assert download.md5sum(tmp_path / sub / ARCHIVE) == archive[1]


def test_partial_extraction_is_redone(tmp_path: Path, archive) -> None:
    csv = write_list(tmp_path / "list.csv", archive[1])
    argv = ["--dest", tmp_path, "--subsets", SUBSET, "--base_url", archive[0].parent.as_uri(), "--csv", csv]
    assert run_download(*argv) == 0
    # as if interrupted mid-way: no marker, one file cut short, one not yet written
    (tmp_path / f"{ARCHIVE}.extracted").unlink()
    flacs = sorted((tmp_path / "LibriSpeech").rglob("*.flac"))
    flacs[0].write_bytes(b"")
    flacs[1].unlink()
    assert run_download(*argv) == 0
    assert_extracted(tmp_path)
    assert (tmp_path / f"{ARCHIVE}.extracted").is_file()


def test_member_outside_extraction_dir_is_refused(tmp_path: Path, capsys) -> None:
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / ARCHIVE, "w:gz") as tar:
        payload = b"escaped"
        member = tarfile.TarInfo("LibriSpeech/../../evil.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    csv = write_list(tmp_path / "list.csv", download.md5sum(www / ARCHIVE))
    out = tmp_path / "out"
    assert run_download("--dest", out, "--subsets", SUBSET, "--base_url", www.as_uri(), "--csv", csv) == 1
    assert "refusing member 'LibriSpeech/../../evil.txt'" in capsys.readouterr().err
    assert not (tmp_path / "evil.txt").exists() and not (out / f"{ARCHIVE}.extracted").exists()


def test_unknown_subset_names_the_known_ones(capsys) -> None:
    assert run_download("--dest", "unused", "--subsets", "dev-cleen") == 1
    assert "unknown subset(s) dev-cleen" in capsys.readouterr().err


def test_shell_script(tmp_path: Path, archive, serve) -> None:
    server = serve()
    root = tmp_path / "datasets"
    env = {
        **os.environ,
        "DATA_ROOT_DIR": str(root),
        "DATA_DIR": str(root / "LibriSpeech"),
        "SUBSETS": SUBSET,
        "BASE_URL": server.url,
    }
    csv = write_list(tmp_path / "list.csv", archive[1])
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "download_librispeech.sh"), "--csv", str(csv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (root / "LibriSpeech" / ARCHIVE).is_file()
    assert_extracted(root)
