"""`jasper client`: transcribe audio files with a running Triton server, over HTTP or gRPC.

Files are read at the model's sample rate (any format, resampled), grouped `--batch_size` to a
request, and sent asynchronously with `--concurrency` requests in flight (tritonclient's asyncio
clients). A batch is zero-padded to its longest file and `NUM_SAMPLES` carries each file's true
length, so the server's masked models decode every file as if it were alone (the reference's
client padded with noise and sent the batch maximum as every length, spec 12.4).

With `--manifest`, the files and reference transcripts come from manifests (reference JSON or
NeMo JSON lines) and the corpus WER is printed. `Client` and `run_requests` are also what the
load test (`benchmarks/serve_load.py`) and the integration tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import string
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jasper import audio as audio_io

ENSEMBLE = "jasper"
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
ENGLISH_LABELS = (" ", *string.ascii_lowercase, "'")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class ClientError(RuntimeError):
    """The server answered a request with an error (the message is the server's)."""


def batch_inputs(audios: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded `[B, max_len]` float32 audio and `[B, 1]` int32 true lengths."""
    lengths = np.array([[len(a)] for a in audios], dtype=np.int32)
    batch = np.zeros((len(audios), int(lengths.max(initial=0))), dtype=np.float32)
    for row, a in zip(batch, audios, strict=True):
        row[: len(a)] = a
    return batch, lengths


class Client:
    """Async client for the Jasper ensemble: `await client.transcribe([audio, ...])` -> texts."""

    def __init__(
        self, url: str, protocol: str = "http", model: str = ENSEMBLE, timeout: float = 120.0
    ) -> None:
        if protocol == "http":
            import tritonclient.http.aio as triton

            self._client: Any = triton.InferenceServerClient(url, conn_timeout=timeout, conn_limit=0)
        elif protocol == "grpc":
            import tritonclient.grpc.aio as triton

            self._client = triton.InferenceServerClient(url)
        else:
            raise ValueError(f"protocol must be http or grpc, got {protocol!r}")
        self._triton, self.protocol, self.model, self.timeout = triton, protocol, model, timeout

    async def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        """One request with a batch of utterances; raises `ClientError` if the server refuses it."""
        batch, lengths = batch_inputs(audios)
        return await self.infer(
            [self.tensor("AUDIO_SIGNAL", batch, "FP32"), self.tensor("NUM_SAMPLES", lengths, "INT32")]
        )

    def tensor(self, name: str, data: np.ndarray, dtype: str) -> Any:
        """A request input; `dtype` is Triton's name (FP32, INT32, ...), `data` is sent as it is."""
        tensor = self._triton.InferInput(name, list(data.shape), dtype)
        tensor.set_data_from_numpy(data)
        return tensor

    async def infer(self, inputs: list[Any]) -> list[str]:
        """Send prepared inputs; returns the decoded TRANSCRIPT strings."""
        kwargs = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        try:
            result = await self._client.infer(self.model, inputs, **kwargs)
        except self._triton.InferenceServerException as e:
            raise ClientError(e.message()) from None
        return [t.decode() for t in result.as_numpy("TRANSCRIPT").reshape(-1)]

    async def statistics(self, model: str | None = None) -> dict[str, Any]:
        """Triton's inference statistics (`/v2/models/<model>/stats`) as JSON-like dicts."""
        if self.protocol == "grpc":
            return await self._client.get_inference_statistics(model or "", as_json=True)
        return await self._client.get_inference_statistics(model or "")

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class RequestResult:
    """One request's outcome: texts (or the server's error) and the wall time from send to answer."""

    index: int
    texts: list[str]
    latency: float
    error: str | None = None


async def run_requests(
    client: Client, batches: Sequence[Sequence[np.ndarray]], concurrency: int
) -> list[RequestResult]:
    """Send every batch as one request, keeping `concurrency` requests in flight; results in order.

    Closed loop, like perf_analyzer's concurrency mode: each of `concurrency` workers sends its next
    request as soon as its previous one is answered. A refused request is recorded, not raised.
    """
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(batches)):
        queue.put_nowait(i)
    results: list[RequestResult | None] = [None] * len(batches)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            start = time.perf_counter()
            try:
                texts, error = await client.transcribe(batches[i]), None
            except (ClientError, asyncio.TimeoutError, OSError) as e:
                texts, error = [], str(e) or type(e).__name__
            results[i] = RequestResult(i, texts, time.perf_counter() - start, error)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return [r for r in results if r is not None]


def audio_files(paths: Sequence[str | Path]) -> list[Path]:
    """The given files, and the audio files found (recursively, sorted) in the given directories."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise audio_io.AudioError(f"{p}: no such file or directory")
    return found


def manifest_items(manifests: Sequence[str], data_dir: str, labels: Sequence[str]) -> list[tuple[Path, str]]:
    """(audio path, normalised reference) per utterance of the manifests, speed-1 files only."""
    from jasper import config
    from jasper.data import load_utterances
    from jasper.text import Tokenizer

    dataset = config.fill(
        {"ignore_offline_speed_perturbation": True, "min_duration": 0}, config.AUDIO_DATASET
    )
    utterances, _ = load_utterances(manifests, data_dir, Tokenizer(labels), dataset)
    return [(u.paths[0], u.text) for u in utterances]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", help="audio files, or directories searched for audio files")
    parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        help="manifest (reference JSON or NeMo JSON lines) whose files are sent and whose transcripts "
        "give the WER; repeatable",
    )
    parser.add_argument("--data_dir", default=".", help="directory manifest paths are relative to")
    parser.add_argument(
        "--url",
        default=None,
        help="server host:port (default: localhost:8000 for http, localhost:8001 for grpc)",
    )
    parser.add_argument(
        "--protocol", choices=("http", "grpc"), default="http", help="transport (default: http)"
    )
    parser.add_argument(
        "--model", default=ENSEMBLE, help="ensemble name on the server (default: %(default)s)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight at once (default: %(default)s)"
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=1,
        help="files per request, zero-padded with true lengths; at most the server's max_batch_size "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--model_config",
        default=None,
        help="model config whose labels and sample rate apply (default: English labels, 16 kHz)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per request (default: %(default)s)"
    )
    parser.add_argument(
        "--json", default=None, help="also write every transcript (and the WER) to this JSON file"
    )


def run(args: argparse.Namespace) -> int:
    labels, sample_rate = ENGLISH_LABELS, audio_io.SAMPLE_RATE
    if args.model_config:
        from jasper import config

        cfg = config.load(args.model_config)
        labels = tuple(cfg["labels"])
        sample_rate = config.section(cfg, "input_val", "filterbank_features")["sample_rate"]
    items = [(p, None) for p in audio_files(args.files)]
    items += manifest_items(args.manifest, args.data_dir, labels) if args.manifest else []
    if not items:
        print("jasper client: error: no audio files given (FILES or --manifest)", file=sys.stderr)
        return 2
    audios = [audio_io.load(p, sample_rate) for p, _ in items]
    batches = [audios[i : i + args.batch_size] for i in range(0, len(audios), args.batch_size)]
    url = args.url or f"localhost:{DEFAULT_PORTS[args.protocol]}"

    async def main() -> tuple[list[RequestResult], float]:
        async with Client(url, args.protocol, args.model, args.timeout) as client:
            start = time.perf_counter()
            results = await run_requests(client, batches, args.concurrency)
            return results, time.perf_counter() - start

    results, elapsed = asyncio.run(main())
    texts: list[str | None] = []
    for r in results:
        texts += r.texts if r.error is None else [None] * len(batches[r.index])
    records = []
    for (path, reference), text in zip(items, texts, strict=True):
        print(f"{path}\t{text if text is not None else '<error>'}")
        records.append({"file": str(path), "transcript": text, "reference": reference})
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"jasper client: request {r.index} failed: {r.error}", file=sys.stderr)
    seconds = sum(len(a) for a in audios) / sample_rate
    summary: dict[str, Any] = {
        "files": len(items),
        "failed_requests": len(failed),
        "seconds": round(elapsed, 3),
        "audio_seconds": round(seconds, 2),
    }
    scored = [(t, ref) for t, (_, ref) in zip(texts, items, strict=True) if ref is not None and t is not None]
    if scored:
        from jasper.metrics import word_errors

        errors = word_errors([t for t, _ in scored], [ref for _, ref in scored])
        summary.update(wer=errors.rate, word_errors=errors.errors, words=errors.units)
        print(f"WER {100 * errors.rate:.2f}% ({errors.errors} errors / {errors.units} words)")
    print(
        f"{len(items)} files, {seconds:.1f} s of audio in {elapsed:.2f} s "
        f"({seconds / max(elapsed, 1e-9):.1f}x real time), {len(failed)} failed requests",
        file=sys.stderr,
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "results": records}, indent=2) + "\n")
    return 1 if failed else 0
