"""The Triton deployment against a real server: `jasper triton-repo`, `jasper serve`, the client.

The tiny config's repository (random weights, cpu flavour) is served by the real tritonserver of
`.venv-triton` on 127.0.0.1, started through the `jasper serve` command exactly as a user runs it.
Tests that need the server skip, saying why, when that environment is missing (make it with
`bash scripts/setup_triton.sh`); the config checks need only tritonclient in the main environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED

from jasper import audio, config
from jasper.checkpoint import atomic_save
from jasper.decoding import greedy_decode
from jasper.features import FilterbankFeatures
from jasper.model import Jasper
from jasper.serving.repository import (
    RepoOptions,
    ensemble_config,
    stage_config,
    validate_repository,
    write_repository,
)
from jasper.text import Tokenizer

TINY = REPO / "configs" / "tiny.yaml"
MAX_DURATION = 8.0
SHM = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _speech(n: int) -> list[np.ndarray]:
    """Real LibriSpeech clips when ../shared is there, else seeded noise bursts (both 0.5 to 4 s)."""
    clips = sorted((SHARED / "data" / "librispeech-real-mini").rglob("*.flac"))[:n]
    if len(clips) == n:
        return [audio.load(p)[: int((0.5 + 3.5 * i / max(n - 1, 1)) * 16000)] for i, p in enumerate(clips)]
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int((0.5 + 0.7 * i) * 16000))).astype(np.float32) for i in range(n)]


def _shm_regions() -> set[str]:
    return {p.name for p in SHM.glob(SHM_PREFIX + "*")} if SHM.is_dir() else set()


class Served:
    """The tiny model, its eager transcripts, and the `jasper serve` process serving its repository."""

    def __init__(self, root: Path) -> None:
        from jasper.serving.server import TritonError, TritonInstall

        try:
            TritonInstall.find()
        except TritonError as e:
            pytest.skip(f"no Triton server environment: {e}")
        pytest.importorskip(
            "tritonclient.grpc", reason="tritonclient is not installed: pip install -e '.[serve]'"
        )
        self.cfg = config.load(TINY)
        torch.manual_seed(0)
        self.model = Jasper.from_config(self.cfg).eval()
        ckpt = root / "tiny.pt"
        atomic_save({"state_dict": self.model.state_dict()}, ckpt)
        self.features = FilterbankFeatures(
            **config.section(self.cfg, "input_val", "filterbank_features")
        ).eval()
        self.tokenizer = Tokenizer(self.cfg["labels"])
        self.repo = root / "repo"
        opts = RepoOptions(max_batch_size=8, max_queue_delay_us=20_000, max_duration=MAX_DURATION)
        write_repository(self.cfg, self.model, self.repo, opts)
        self.http_port, self.grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
        self.log = root / "server.log"
        self.shm_before = _shm_regions()
        command = [sys.executable, "-m", "jasper.cli", "serve", "--repo", str(self.repo)]
        command += ["--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port)]
        command += ["--metrics_port", str(metrics_port), "--log_file", str(self.log)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 180
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text()[-3000:] if self.log.is_file() else ""
                pytest.fail(f"jasper serve did not become ready:\n{self.process.stdout.read()}\n{tail}")
            time.sleep(0.3)

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def url(self, protocol: str) -> str:
        return self.http if protocol == "http" else f"127.0.0.1:{self.grpc_port}"

    def eager(self, clip: np.ndarray) -> str:
        """The transcript of features -> model -> greedy decoding in PyTorch, utterance alone."""
        with torch.no_grad():
            feats, lens = self.features(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
            log_probs, out_lens = self.model(feats, lens)
        return greedy_decode(log_probs, out_lens, self.tokenizer)[0]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        return self.process.returncode


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("triton"))
    yield s
    s.stop()


def _transcribe(
    served: Served, batches: list[list[np.ndarray]], protocol: str = "http", concurrency: int = 1
):
    from jasper.serving.client import Client, run_requests

    async def go():
        async with Client(served.url(protocol), protocol) as client:
            return await run_requests(client, batches, concurrency)

    return asyncio.run(go())


# ---------------------------------------------------------------- configs (no server needed)


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_configs_follow_tritons_schema(flavour: str, tmp_path: Path) -> None:
    pytest.importorskip(
        "tritonclient.grpc", reason="tritonclient is not installed: pip install -e '.[serve]'"
    )
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    opts = RepoOptions(flavour=flavour, max_batch_size=4, max_queue_delay_us=1234, instances=2)
    params = {"component": "acoustic-model", "onnx_file": "model.onnx"}
    model = text_format.Parse(
        stage_config("acoustic-model", opts, 64, 29, params), model_config_pb2.ModelConfig()
    )
    assert model.max_batch_size == 4
    assert model.dynamic_batching.max_queue_delay_microseconds == 1234
    assert model.instance_group[0].count == 2
    if (
        flavour == "gpu"
    ):  # Triton's native onnxruntime backend on the GPU; lengths reshaped to the graph's [B]
        assert (
            model.platform == "onnxruntime_onnx"
            and model.instance_group[0].kind == model.instance_group[0].KIND_GPU
        )
        assert list(model.input[1].reshape.shape) == [] and model.input[1].HasField("reshape")
    else:
        assert model.backend == "python" and model.parameters["component"].string_value == "acoustic-model"
    ensemble = text_format.Parse(ensemble_config(opts), model_config_pb2.ModelConfig())
    assert ensemble.platform == "ensemble"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "feature-extractor",
        "acoustic-model",
        "decoder",
    ]
    assert [i.name for i in ensemble.input] == ["AUDIO_SIGNAL", "NUM_SAMPLES"]
    assert (
        ensemble.output[0].name == "TRANSCRIPT"
        and ensemble.output[0].data_type == model_config_pb2.TYPE_STRING
    )


# ---------------------------------------------------------------- the real server


def test_repository_is_valid(served: Served) -> None:
    assert validate_repository(served.repo) == ["acoustic-model", "decoder", "feature-extractor", "jasper"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_single_request_matches_eager_pytorch(served: Served, protocol: str) -> None:
    clips = _speech(3)
    results = _transcribe(served, [[c] for c in clips], protocol)
    assert [r.error for r in results] == [None] * 3
    assert [r.texts[0] for r in results] == [served.eager(c) for c in clips]


def test_ragged_batch_in_one_request_decodes_like_separate_requests(served: Served) -> None:
    clips = _speech(4)
    (batched,) = _transcribe(served, [clips])
    alone = _transcribe(served, [[c] for c in clips])
    assert batched.error is None
    assert batched.texts == [r.texts[0] for r in alone] == [served.eager(c) for c in clips]


def test_concurrent_requests_are_batched(served: Served) -> None:
    from jasper.serving.client import Client

    clips = _speech(8)
    results = _transcribe(served, [[c] for c in clips], concurrency=8)
    assert all(r.error is None for r in results)

    async def stats():
        async with Client(served.http) as client:
            return await client.statistics()

    sizes = {
        m["name"]: [int(b["batch_size"]) for b in m.get("batch_stats", [])]
        for m in asyncio.run(stats())["model_stats"]
    }
    formed = [size for name in ("feature-extractor", "acoustic-model", "decoder") for size in sizes[name]]
    assert max(formed) > 1, f"Triton formed no batch above 1: {sizes}"


def _post(served: Served, body: bytes, header_length: int | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    request = urllib.request.Request(
        f"http://{served.http}/v2/models/jasper/infer", body, headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


BAD_INPUTS = {
    "wrong dtype": lambda: ([np.zeros((1, 16000), np.float64)], "FP64", np.array([[16000]], np.int32)),
    "int16 audio": lambda: ([np.zeros((1, 16000), np.int16)], "INT16", np.array([[16000]], np.int32)),
    "wrong rank": lambda: ([np.zeros((1, 2, 16000), np.float32)], "FP32", np.array([[16000]], np.int32)),
    "empty audio": lambda: ([np.zeros((1, 0), np.float32)], "FP32", np.array([[0]], np.int32)),
    "too long": lambda: (
        [np.zeros((1, int(MAX_DURATION * 16000) + 1), np.float32)],
        "FP32",
        np.array([[int(MAX_DURATION * 16000) + 1]], np.int32),
    ),
    "ten minutes": lambda: (
        [np.zeros((1, 600 * 16000), np.float32)],
        "FP32",
        np.array([[600 * 16000]], np.int32),
    ),
    "length beyond audio": lambda: (
        [np.zeros((1, 16000), np.float32)],
        "FP32",
        np.array([[16001]], np.int32),
    ),
    "batch above max": lambda: ([np.zeros((9, 16000), np.float32)], "FP32", np.full((9, 1), 16000, np.int32)),
    "NaN audio": lambda: ([np.full((1, 16000), np.nan, np.float32)], "FP32", np.array([[16000]], np.int32)),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_an_error_and_the_server_stays_up(served: Served, case: str) -> None:
    from jasper.serving.client import Client, ClientError

    (data,), dtype, lengths = BAD_INPUTS[case]()

    async def send() -> list[str]:
        async with Client(served.http) as client:
            inputs = [
                client.tensor("AUDIO_SIGNAL", data, dtype),
                client.tensor("NUM_SAMPLES", lengths, "INT32"),
            ]
            return await client.infer(inputs)

    with pytest.raises(ClientError) as e:
        asyncio.run(send())
    assert str(e.value)
    good = _speech(1)
    assert _transcribe(served, [good])[0].texts == [served.eager(good[0])]


@pytest.mark.parametrize(
    "body, header_length",
    [(os.urandom(512), None), (b'{"inputs": [{"name": "AUDIO_SIGNAL"', None), (os.urandom(256), 100)],
    ids=["random bytes", "truncated JSON", "binary with bad header length"],
)
def test_garbage_bytes_get_an_error_and_the_server_stays_up(
    served: Served, body: bytes, header_length: int | None
) -> None:
    status, text = _post(served, body, header_length)
    # Triton answers unparsable JSON with 500 (its choice, not a crash) and other refusals with 400.
    assert status in (400, 500) and '"error"' in text, (status, text)
    assert served.ready()
    good = _speech(1)
    assert _transcribe(served, [good])[0].texts == [served.eager(good[0])]


def test_client_command_prints_transcripts_and_wer(served: Served, tmp_path: Path) -> None:
    from jasper.cli import main

    clips = _speech(2)
    manifest = []
    for i, clip in enumerate(clips):
        audio.write(tmp_path / f"u{i}.wav", clip)
        manifest.append({"transcript": "hello world", "files": [{"fname": f"u{i}.wav", "duration": 1.0}]})
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    out = tmp_path / "out.json"
    code = main(
        ["client", "--url", served.url("grpc"), "--protocol", "grpc", "--manifest", str(tmp_path / "m.json")]
        + ["--data_dir", str(tmp_path), "--batch_size", "2", "--json", str(out)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["summary"]["failed_requests"] == 0 and report["summary"]["words"] == 4
    written = [audio.load(tmp_path / f"u{i}.wav") for i in range(2)]
    assert [r["transcript"] for r in report["results"]] == [served.eager(c) for c in written]


def test_sigterm_stops_cleanly_without_leaks(served: Served) -> None:
    """Runs last: SIGTERM to `jasper serve` stops Triton and its stubs, and frees their /dev/shm regions."""
    from jasper.serving.server import process_tree

    tree = process_tree(served.process.pid)
    assert len(tree) >= 5, f"expected jasper serve, tritonserver and 3 backend stubs, got {tree}"
    assert served.stop() == 0
    time.sleep(0.5)
    alive = [pid for pid in tree if Path(f"/proc/{pid}").exists()]
    assert alive == [], f"processes left behind: {alive}"
    assert _shm_regions() - served.shm_before == set()
    assert "ready:" in served.process.stdout.read()
