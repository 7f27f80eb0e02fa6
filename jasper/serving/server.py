"""`jasper serve`: run Triton Inference Server on a model repository, until SIGTERM or Ctrl-C.

The server is the `tritonserver` binary (Triton 2.51, CPU-capable, Python backend) bundled in the
PyPI wheel nvidia-pytriton, installed by `scripts/setup_triton.sh` into its own environment
(`.venv-triton`), so no container is needed. Starting it outside pytriton takes care:
- the environment's `bin` comes first on PATH, so the Python backend stub finds that
  environment's packages (numpy < 2: with numpy 2 the stub returns empty outputs);
- LD_LIBRARY_PATH starts with that Python's own lib directory, so the stub links the libpython of
  the interpreter whose standard library it loads (a system libpython of another patch release
  fails with "'_thread.RLock' object has no attribute '_recursion_count'"), then the wheel's libs.

The command returns once the server has stopped: on SIGTERM or SIGINT it asks Triton to shut
down (in-flight requests finish, models unload, the backend stubs exit and free their /dev/shm
regions) and waits. Triton dies with this process even if it is killed, so no server is orphaned.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ENV_VARIABLE = "JASPER_TRITON_VENV"
ENV_DIR = ".venv-triton"
SETUP_HINT = "run `bash scripts/setup_triton.sh` (or point JASPER_TRITON_VENV at such an environment)"
PR_SET_PDEATHSIG = 1


class TritonError(RuntimeError):
    """The server could not be found, started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the parts of a nvidia-pytriton environment live."""

    env: Path
    binary: Path
    backends: Path
    libs: Path
    python_libdir: Path

    @classmethod
    def find(cls, env: str | Path | None = None) -> TritonInstall:
        """Locate the environment: `env`, else $JASPER_TRITON_VENV, ./.venv-triton, or beside the repo."""
        if env is not None:
            candidates = [Path(env)]
        else:
            beside_repo = Path(__file__).resolve().parents[2] / ENV_DIR
            found = [os.environ.get(ENV_VARIABLE), Path.cwd() / ENV_DIR, beside_repo]
            candidates = list(dict.fromkeys(Path(p) for p in found if p))
        for root in candidates:
            binaries = sorted(root.glob("lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver"))
            if binaries:
                server_dir = binaries[0].parents[1]
                libdir = subprocess.run(
                    [
                        str(root / "bin" / "python"),
                        "-c",
                        "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                return cls(
                    root.absolute(),
                    binaries[0],
                    server_dir / "backends",
                    server_dir.parent.parent / "nvidia_pytriton.libs",
                    Path(libdir),
                )
        raise TritonError(f"no Triton environment at {', '.join(map(str, candidates))}: {SETUP_HINT}")

    def environment(self) -> dict[str, str]:
        """Process environment for tritonserver and its Python backend stubs."""
        env = dict(os.environ)
        env["PATH"] = f"{self.env / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        libs = [str(self.python_libdir), str(self.libs), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        env["VIRTUAL_ENV"] = str(self.env)
        env.pop("PYTHONHOME", None)
        env.pop("PYTHONPATH", None)
        return env


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent process dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(status.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its descendants (the server and its backend stubs)."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class TritonServer:
    """A tritonserver process on `repo`: `start()` waits until ready, `stop()` shuts it down cleanly.

    Logs go to `log_file` (default: inherited stdout/stderr).
    """

    def __init__(
        self,
        repo: str | Path,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        address: str = "127.0.0.1",
        env: str | Path | None = None,
        log_verbose: int = 0,
        log_file: str | Path | None = None,
        exit_timeout: int = 30,
    ) -> None:
        self.repo = Path(repo).absolute()
        if not (self.repo.is_dir() and any(self.repo.glob("*/config.pbtxt"))):
            raise TritonError(f"{repo}: not a model repository (no */config.pbtxt); see `jasper triton-repo`")
        self.install = TritonInstall.find(env)
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.address, self.log_verbose, self.exit_timeout = address, log_verbose, exit_timeout
        self.log_file = Path(log_file) if log_file else None
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    def command(self) -> list[str]:
        return [
            str(self.install.binary),
            f"--model-repository={self.repo}",
            f"--backend-directory={self.install.backends}",
            f"--http-address={self.address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--disable-auto-complete-config",
            "--exit-on-error=true",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--log-verbose={self.log_verbose}",
        ]

    def ready(self) -> bool:
        """True when /v2/health/ready answers 200 (every model loaded)."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 300.0) -> None:
        """Start the server and wait until it is ready; raises `TritonError` with its log if it is not."""
        out = self._log = open(self.log_file, "ab") if self.log_file else None  # closed in stop()
        self.process = subprocess.Popen(
            self.command(),
            env=self.install.environment(),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop Triton in order
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while not self.ready():
            code = self.process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                why = (
                    f"exited with code {code}" if code is not None else f"was not ready after {timeout:.0f} s"
                )
                raise TritonError(f"tritonserver {why}{self._log_tail()}")
            time.sleep(0.2)

    def _log_tail(self, lines: int = 30) -> str:
        if not self.log_file or not self.log_file.is_file():
            return ""
        tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        return f"; last lines of {self.log_file}:\n" + "\n".join(tail)

    def rss(self) -> int:
        """Resident memory of the server and its backend stubs, bytes."""
        return rss_bytes(self.process.pid) if self.process and self.process.poll() is None else 0

    def request_stop(self) -> None:
        """Ask Triton to shut down (SIGTERM) without waiting; safe in a signal handler."""
        if self.process is not None and self.process.returncode is None:
            try:
                os.kill(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM, wait for a clean exit (SIGKILL after `timeout`), return the exit code."""
        if self.process is None:
            return 0
        timeout = self.exit_timeout + 15 if timeout is None else timeout
        self.request_stop()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in reversed(process_tree(self.process.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait()
        if self._log:
            self._log.close()
            self._log = None
        return self.process.returncode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", required=True, help="model repository written by `jasper triton-repo`")
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="interface the HTTP, gRPC and metrics endpoints bind to; 0.0.0.0 serves other machines "
        "(default: %(default)s)",
    )
    parser.add_argument("--http_port", type=int, default=8000, help="HTTP/REST port (default: %(default)s)")
    parser.add_argument("--grpc_port", type=int, default=8001, help="gRPC port (default: %(default)s)")
    parser.add_argument(
        "--metrics_port", type=int, default=8002, help="Prometheus metrics port (default: %(default)s)"
    )
    parser.add_argument(
        "--triton_env",
        default=None,
        help="the server's environment made by scripts/setup_triton.sh "
        f"(default: ${ENV_VARIABLE}, else ./{ENV_DIR})",
    )
    parser.add_argument(
        "--log_verbose", type=int, default=0, help="Triton's --log-verbose level (default: 0)"
    )
    parser.add_argument(
        "--log_file", default=None, help="write the server log here instead of to the terminal"
    )
    parser.add_argument(
        "--startup_timeout",
        type=float,
        default=300.0,
        help="seconds to wait for readiness (default: %(default)s)",
    )
    parser.add_argument(
        "--exit_timeout",
        type=int,
        default=30,
        help="seconds Triton waits for in-flight requests when stopping (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        server = TritonServer(
            args.repo,
            args.http_port,
            args.grpc_port,
            args.metrics_port,
            args.address,
            args.triton_env,
            args.log_verbose,
            args.log_file,
            args.exit_timeout,
        )
    except TritonError as e:
        print(f"jasper serve: error: {e}", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        print(
            f"jasper serve: {signal.Signals(signum).name}, stopping the server", file=sys.stderr, flush=True
        )
        server.request_stop()  # the wait below returns when Triton has shut down

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start(args.startup_timeout)
    except TritonError as e:
        print(f"jasper serve: error: {e}", file=sys.stderr)
        return 1
    print(
        f"ready: HTTP http://{server.http_url}  gRPC {server.grpc_url}  "
        f"metrics http://{server.address}:{server.metrics_port}/metrics  (pid {server.process.pid})",
        flush=True,
    )
    code = server.process.wait()
    server.stop()
    return 0 if code in (0, -signal.SIGTERM) else code
