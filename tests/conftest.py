"""Shared test helpers: where `../shared` (fixtures, real LibriSpeech clips, sentences) lives."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# JASPER_SHARED points elsewhere where `../shared` cannot sit beside the clone (a GPU machine's copy).
SHARED = Path(os.environ.get("JASPER_SHARED") or REPO.parent / "shared")


def require_shared(*parts: str) -> Path:
    """Return a path under ../shared, or skip the test with a reason naming the missing path."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared fixtures are laid out beside the clone in CI")
    return path


def mini_manifest(root: Path, out: Path | None = None, limit: int | None = None) -> list[dict]:
    """NeMo JSON-lines entries for the real mini LibriSpeech set, in LibriSpeech order; written to
    `out` when given. `jasper.data.load_utterances` reads this format."""
    import soundfile as sf

    entries = []
    for trans in sorted(root.glob("*/*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            uid, text = line.split(" ", 1)
            flac = trans.parent / f"{uid}.flac"
            entries.append(
                {
                    "audio_filepath": str(flac.relative_to(root)),
                    "duration": sf.info(str(flac)).duration,
                    "text": text,
                }
            )
    entries = entries[:limit]
    if out is not None:
        write_manifest(out, entries)
    return entries


def shortest_mini_rows() -> tuple[Path, list[dict]]:
    """The real mini LibriSpeech directory and its manifest entries, shortest clip first: training
    tests take the first few so that a CPU gets through them in seconds. Skips without ../shared."""
    root = require_shared("data", "librispeech-real-mini")
    return root, sorted(mini_manifest(root), key=lambda r: r["duration"])


def write_manifest(path: Path, rows: list[dict]) -> str:
    """Write NeMo JSON-lines `rows` to `path`; return the path as a string for command lines."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def impossible_clip(root: Path, rows: list[dict], tmp: Path) -> dict:
    """A 0.3 s cut of the shortest clip with a transcript far too long for its CTC frames: its loss is
    infinite, and training must skip it rather than crash or learn NaNs."""
    import soundfile as sf

    audio, rate = sf.read(str(root / rows[0]["audio_filepath"]))
    clip = tmp / "clip.flac"
    sf.write(str(clip), audio[int(0.8 * rate) : int(1.1 * rate)], rate)
    return {"audio_filepath": str(clip), "duration": 0.3, "text": "far too many letters " * 10}


class FileServer(ThreadingHTTPServer):
    """Serves the files under `root` on 127.0.0.1, as model and corpus hosts do, with switches.

    `ranges` honours Range requests (else answers 200 with the whole file), `content_length` sends
    the header, `cut_after` drops the first file response after that many bytes. `signed` mimics
    NGC: `/ngc/<file>` redirects to `/signed/<token>/<file>`, and a token works only once, so a
    resumed download must resolve the URL again. `requests` records each file response: (path,
    Range header, status).
    """

    def __init__(
        self,
        root: Path,
        ranges: bool = True,
        content_length: bool = True,
        cut_after: int | None = None,
        signed: bool = False,
    ):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.root, self.ranges, self.content_length, self.cut_after = root, ranges, content_length, cut_after
        self.signed, self.used_tokens = signed, set()
        self.requests: list[tuple[str, str | None, int]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
        name = self.path.lstrip("/")
        if self.server.signed and name.startswith("ngc/"):
            self.send_response(302)
            self.send_header("Location", f"/signed/{uuid.uuid4().hex}/{name[4:]}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.server.signed and name.startswith("signed/"):
            _, token, name = name.split("/", 2)
            if token in self.server.used_tokens:
                self.send_error(403, "signed URL expired")
                return
            self.server.used_tokens.add(token)
        path = self.server.root / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        wanted = self.headers.get("Range")
        start, status = 0, 200
        if wanted and self.server.ranges:
            start, status = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1]), 206
        first = not self.server.requests
        self.server.requests.append((self.path, wanted, status))
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if self.server.content_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if first and self.server.cut_after is not None:
            self.wfile.write(body[: self.server.cut_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def file_servers(root: Path) -> Iterator[Callable[..., FileServer]]:
    """`start(**switches)` starts a `FileServer` on `root`; all are shut down on exit."""
    servers: list[FileServer] = []

    def start(**options: object) -> FileServer:
        server = FileServer(root, **options)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
