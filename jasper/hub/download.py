"""Resumable HTTP downloads: a file appears at its path whole and checked, or not at all.

A download goes into `<file>.part`; after a dropped connection it resumes with an HTTP Range
request (bounded retries, exponential backoff), and when a server ignores Range and sends the
whole file again, it starts over cleanly. Without a Content-Length header a dropped connection
looks like the end of the file, and only a checksum catches it. The finished part is checked, then
renamed into place. HTTP goes through the standard library (urllib), so `file://` URLs work too.
Used for LibriSpeech's archives (`jasper.datasets.download`) and the published models
(`jasper.hub.models`).
"""

from __future__ import annotations

import hashlib
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

CHUNK = 1 << 20
RETRIES = 5
MAX_BACKOFF_S = 60.0
TIMEOUT_S = 60.0


class DownloadError(RuntimeError):
    """A download, checksum or extraction that failed; the message names the file."""


def download(
    url: str, dest: Path, retries: int = RETRIES, check: Callable[[Path], None] | None = None
) -> None:
    """Fetch `url` into `dest` through `<dest>.part`, resuming after dropped connections.

    Every attempt requests `url` itself, so a redirect to a short-lived signed URL is resolved
    afresh. `check(part)` runs on the whole file before it is renamed into place; when it raises,
    the part file is removed and its error passes on.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(max(retries, 0) + 1):
        try:
            _fetch_into(url, part)
            if check is not None:
                try:
                    check(part)
                except BaseException:
                    part.unlink(missing_ok=True)
                    raise
            part.replace(dest)
            return
        except HTTPError as e:
            if e.code < 500:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            error: Exception = e
        except URLError as e:
            if isinstance(e.reason, FileNotFoundError):  # a file:// URL to nothing is not transient
                raise DownloadError(f"{url}: no such file") from None
            if isinstance(e.reason, (ConnectionRefusedError, socket.gaierror)) and not part.exists():
                # no network, or no server there: retrying will not help, and the user is waiting
                raise DownloadError(f"{url}: {e.reason}") from None
            error = e
        except OSError as e:  # resets, timeouts, and the short body of `_fetch_into`
            error = e
        if attempt < retries:
            delay = min(MAX_BACKOFF_S, 2.0**attempt)
            print(f"{dest.name}: {error}; retry {attempt + 1}/{retries} in {delay:.0f} s", file=sys.stderr)
            time.sleep(delay)
    raise DownloadError(f"{url}: giving up after {retries} retries ({error}); run again to resume {part}")


def _fetch_into(url: str, part: Path) -> None:
    """One request: append to `part` from its current size, or rewrite it when the server ignores Range."""
    offset = part.stat().st_size if part.exists() else 0
    request = Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urlopen(request, timeout=TIMEOUT_S)
    except HTTPError as e:
        if e.code == 416 and offset:  # nothing left after `offset`: the part is whole (the MD5 will tell)
            return
        raise
    with response:
        if offset and response.status != 206:  # Range ignored (or file://): the body is the whole file
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        received = offset
        name = part.name.removesuffix(".part")
        with open(part, "ab" if offset else "wb") as f, bytes_bar(name, total, offset) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    # http.client returns a short body without complaint when the connection drops.
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


def bytes_bar(desc: str, total: int | None, initial: int = 0) -> tqdm:
    return tqdm(
        desc=desc, total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, leave=False
    )


def sha256sum(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks, with a progress bar."""
    digest = hashlib.sha256()
    with (
        open(path, "rb") as f,
        bytes_bar(f"sha256 {path.name.removesuffix('.part')}", path.stat().st_size) as bar,
    ):
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()
