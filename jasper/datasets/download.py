"""Download LibriSpeech archives, check their MD5 and extract them; safe to interrupt and run again.

The reference's download script needed a Content-Length header, started from zero after any
interruption, printed "Failed" on a checksum mismatch and then extracted the archive anyway, and
extracted everything again on every run. Here:

- an archive is downloaded into `<archive>.part`, and after a dropped connection the download
  resumes with an HTTP Range request (bounded retries, exponential backoff). When a server ignores
  Range and sends the whole file again, the download starts over cleanly. Without a Content-Length
  header a dropped connection looks like the end of the file, and only the MD5 catches it.
- an MD5 mismatch is fatal. The archive is renamed `<archive>.corrupt`, nothing is extracted, the
  exit code is 1, and the next run downloads the archive again.
- after its last member, extraction writes `<extract_dir>/<archive>.extracted` (holding the MD5).
  The next run skips an archive with that marker, even after the archive was deleted to save
  space. A tree left half extracted has no marker, so it is extracted again. Members whose paths
  would land outside the extraction directory are refused.

HTTP goes through the standard library (urllib), so `file://` mirrors work too. The archive list
is a CSV with the header `url,md5` (the reference's format). Only each URL's file name is used,
joined to `--base_url`, so one option moves every download to a mirror.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from jasper.hub.download import RETRIES, DownloadError, bytes_bar, download

BASE_URL = "http://www.openslr.org/resources/12/"
ARCHIVE_LIST = Path(__file__).with_name("librispeech.csv")
SUBSETS = (
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
)
CHUNK = 1 << 20
# Python's own member filter (3.10.12+) as a second guard after `_check_member`.
EXTRACT_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


@dataclass(frozen=True)
class Archive:
    """One line of the archive list: the file name and its expected MD5."""

    name: str
    md5: str

    @property
    def subset(self) -> str:
        return re.sub(r"\.(tar\.gz|tgz|tar)$", "", self.name)


@dataclass
class DownloadOptions:
    dest: Path
    extract_dir: Path | None = None  # None: same as dest
    subsets: list[str] = field(default_factory=lambda: list(SUBSETS))
    base_url: str = BASE_URL
    archive_list: Path = ARCHIVE_LIST
    skip_download: bool = False
    skip_checksum: bool = False
    skip_extract: bool = False
    retries: int = RETRIES


def read_archive_list(path: str | Path) -> list[Archive]:
    """Parse a `url,md5` CSV; errors name the file and line."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DownloadError(f"{path}: cannot read the archive list ({e.strerror})") from None
    archives = []
    for line, row in enumerate(rows, start=2):
        url, md5 = (row.get("url") or "").strip(), (row.get("md5") or "").strip().lower()
        if not url or not re.fullmatch(r"[0-9a-f]{32}", md5):
            raise DownloadError(f"{path}:{line}: expected 'url,md5' with a 32-digit hex MD5, got {row}")
        archives.append(Archive(name=url.rstrip("/").rsplit("/", 1)[-1], md5=md5))
    return archives


def select(archives: list[Archive], subsets: list[str]) -> list[Archive]:
    """The archives of `subsets`, in the order given; an unknown subset is an error naming the known ones."""
    by_subset = {a.subset: a for a in archives}
    unknown = [s for s in subsets if s not in by_subset]
    if unknown:
        raise DownloadError(f"unknown subset(s) {', '.join(unknown)}; the list has {', '.join(by_subset)}")
    return [by_subset[s] for s in subsets]


def md5sum(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f, bytes_bar(f"md5 {path.name}", path.stat().st_size) as bar:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    """Raise if the MD5 differs; the bad file moves to `<file>.corrupt` so the next run fetches it again."""
    actual = md5sum(path)
    if actual != expected:
        corrupt = path.with_name(path.name + ".corrupt")
        path.replace(corrupt)
        raise DownloadError(
            f"{path}: MD5 mismatch: expected {expected}, got {actual}; "
            f"moved to {corrupt.name}, run again to download it afresh"
        )


def extract(archive: Path, root: Path) -> None:
    """Extract every member of a (gzipped) tar under `root`, refusing members that would land outside."""
    root.mkdir(parents=True, exist_ok=True)
    base = root.resolve()
    try:
        with (
            open(archive, "rb") as raw,
            tarfile.open(fileobj=raw, mode="r:*") as tar,
            bytes_bar(f"extract {archive.name}", archive.stat().st_size) as bar,
        ):
            for member in tar:
                _check_member(member, base, archive)
                tar.extract(member, base, **EXTRACT_FILTER)
                bar.update(raw.tell() - bar.n)
    except (tarfile.TarError, EOFError, OSError) as e:  # a damaged archive (no checksum?) or a full disk
        raise DownloadError(f"{archive}: cannot extract ({e})") from None


def _check_member(member: tarfile.TarInfo, base: Path, archive: Path) -> None:
    def inside(path: Path) -> bool:
        return path.resolve().is_relative_to(base)

    target = base / member.name
    if not inside(target):
        problem = "its path leaves the extraction directory"
    elif member.issym() and not inside(target.parent / member.linkname):
        problem = f"it links to {member.linkname}, outside the extraction directory"
    elif member.islnk() and not inside(base / member.linkname):
        problem = f"it hard-links to {member.linkname}, outside the extraction directory"
    elif not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        problem = "it is a device or FIFO"
    else:
        return
    raise DownloadError(f"{archive}: refusing member {member.name!r}: {problem}")


def fetch_archive(archive: Archive, opts: DownloadOptions) -> None:
    """Download, verify and extract one archive, skipping the steps already done or switched off."""
    path = opts.dest / archive.name
    extract_dir = opts.extract_dir or opts.dest
    marker = extract_dir / f"{archive.name}.extracted"
    if not opts.skip_extract and marker.is_file() and marker.read_text().strip() == archive.md5:
        print(f"{archive.subset}: already extracted under {extract_dir} ({marker.name}), skipping")
        return
    if not path.is_file():
        if opts.skip_download:
            raise DownloadError(f"{path}: not found, and --skip_download was given")
        url = opts.base_url.rstrip("/") + "/" + archive.name
        print(f"{archive.subset}: downloading {url}")
        download(url, path, opts.retries)
    if not opts.skip_checksum:
        verify(path, archive.md5)
        print(f"{archive.subset}: MD5 {archive.md5} verified")
    if not opts.skip_extract:
        extract(path, extract_dir)
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(archive.md5 + "\n")
        tmp.replace(marker)
        print(f"{archive.subset}: extracted under {extract_dir}")


def download_librispeech(opts: DownloadOptions) -> list[str]:
    """Run every selected archive; returns the error messages (empty when all succeeded)."""
    archives = select(read_archive_list(opts.archive_list), opts.subsets)
    errors = []
    for archive in archives:
        try:
            fetch_archive(archive, opts)
        except DownloadError as e:
            print(f"error: {e}", file=sys.stderr)
            errors.append(str(e))
    return errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", type=Path, required=True, help="directory for the archives")
    parser.add_argument(
        "--extract_dir",
        type=Path,
        default=None,
        help="extract here (default: --dest); the archives hold LibriSpeech/<subset>/...",
    )
    parser.add_argument(
        "--subsets",
        nargs="+",
        default=list(SUBSETS),
        metavar="SUBSET",
        help="subsets to fetch (default: all 7)",
    )
    parser.add_argument(
        "--base_url",
        default=BASE_URL,
        help="mirror that the list's file names are joined to (http://, https:// or file://)",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=ARCHIVE_LIST,
        help="archive list with the header url,md5 (default: the bundled LibriSpeech list)",
    )
    parser.add_argument("--skip_download", action="store_true", help="use archives already in --dest")
    parser.add_argument("--skip_checksum", action="store_true", help="do not check MD5s")
    parser.add_argument("--skip_extract", action="store_true", help="download and check only")
    parser.add_argument(
        "--retries",
        type=int,
        default=RETRIES,
        help="retries per archive after a connection error, with backoff",
    )


def run(args: argparse.Namespace) -> int:
    opts = DownloadOptions(
        dest=args.dest,
        extract_dir=args.extract_dir,
        subsets=args.subsets,
        base_url=args.base_url,
        archive_list=args.csv,
        skip_download=args.skip_download,
        skip_checksum=args.skip_checksum,
        skip_extract=args.skip_extract,
        retries=args.retries,
    )
    try:
        errors = download_librispeech(opts)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if errors:
        print(f"{len(errors)} of {len(opts.subsets)} archive(s) failed:", file=sys.stderr)
        for message in errors:
            print(f"  {message}", file=sys.stderr)
        return 1
    return 0
