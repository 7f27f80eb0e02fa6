"""`jasper transcribe`: speech files in, text (optionally with word timings) out, any length.

The everyday command. Its Python form is `jasper.inference.pipeline` (`load(ckpt).transcribe(paths)`), which
also says how long recordings are chunked and how word timings are found. This module adds what a
command needs around it: directories searched recursively for audio files, output formats (text,
JSON with word times and confidence, SRT/VTT subtitles and TSV: `jasper.inference.subtitles`),
hotwords for beam search, speech-activity segmentation (`jasper.inference.vad`), and errors that
name the file. A file that cannot be read is reported
on stderr and skipped, the others are still transcribed, and the exit code is 3 when anything was
skipped (`jasper.faults`); `--strict` stops at the first.

`--stream` reads one file, or stdin (`-`), block by block and prints each word as soon as it is
final, in bounded memory whatever the length (`jasper.inference.streaming`); at the end it reports
the real-time factor and the compute latency per chunk on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

from jasper import audio as audio_io
from jasper import config
from jasper.device import PRECISIONS
from jasper.faults import Skipped
from jasper.hub.models import add_model_arguments, model_spec
from jasper.inference import engines, streaming, subtitles
from jasper.inference import vad as speech
from jasper.inference.engines import ENGINES
from jasper.inference.pipeline import (
    CHUNK_OVERLAP,
    CHUNK_SECONDS,
    PAD_LEADING,
    Pipeline,
    Result,
    calibration_inputs,
    iter_transcribe,
    load,
)
from jasper.inference.timing import percentiles
from jasper.lm.beam import DEFAULT_HOTWORD_WEIGHT, parse_hotwords

FORMATS = ("txt", "json", "srt", "vtt", "tsv")
PER_FILE = ("srt", "vtt", "tsv")  # a document per input: on stdout for a single input only

# Suffixes searched for in directories, each kept only if the installed libsndfile reads its format.
SUFFIX_FORMATS = {
    ".wav": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".opus": "OGG",
    ".mp3": "MP3",
    ".aiff": "AIFF",
    ".aif": "AIFF",
    ".au": "AU",
    ".w64": "W64",
    ".caf": "CAF",
}

AUDIO_SUFFIXES = frozenset(s for s, fmt in SUFFIX_FORMATS.items() if fmt in sf.available_formats())
NO_CHECKPOINT = (
    "no model given. Pass --model NAME|PATH|URL (or --ckpt), where it is either\n"
    "  - a published model by name: `jasper models` lists NVIDIA's and NeMo's Jasper and QuartzNet\n"
    "    checkpoints (e.g. --model stt_en_quartznet15x5), downloaded once into the cache;\n"
    "  - a checkpoint you trained: `bash scripts/train.sh` writes Jasper_epoch<N>_checkpoint.pt and\n"
    "    Jasper_best_checkpoint.pt to its OUTPUT_DIR; or\n"
    "  - a NeMo .nemo file, or the URL of a .pt or .nemo file."
)


def audio_files(inputs: Iterable[str | Path], skipped: Skipped | None = None) -> list[tuple[Path, Path]]:
    """(file, name relative to its input) for each file given and each audio file under each directory.

    An input that is neither (or a directory without audio) raises its `AudioError`, or goes to
    `skipped` when one is given.
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        try:
            if path.is_dir():
                files = sorted(
                    f for f in path.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file()
                )
                if not files:
                    raise audio_io.AudioError(
                        f"{path}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in it"
                    )
                found += [(f, f.relative_to(path)) for f in files]
            elif path.is_file():
                found.append((path, Path(path.name)))
            else:
                raise audio_io.AudioError(f"{path}: no such file or directory")
        except audio_io.AudioError as e:
            if skipped is None:
                raise
            skipped.add(path, e)
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="audio files and/or directories")
    add_model_arguments(parser)
    parser.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    config.add_override_argument(parser)
    parser.add_argument(
        "--format",
        choices=[*FORMATS, "all"],
        default="txt",
        help="txt: the transcript; json: transcript, duration, per-word start/end seconds and confidence; "
        "srt, vtt: subtitles; tsv: one word per row (start and end ms, word, confidence); all: every one",
    )
    parser.add_argument(
        "--output_dir",
        default=None,
        help="write one <name>.<format> per input and format (directory structure kept); default: print to "
        "stdout (txt: `path<TAB>text` lines, json: one object per line; srt, vtt and tsv for one input only)",
    )
    parser.add_argument(
        "--vad",
        choices=speech.METHODS,
        default="none",
        help="recognise only the speech regions, cut at silences (word times stay absolute): silero "
        f"(Silero VAD, {speech.INSTALL_HINT}) or energy (no dependencies; fooled by loud noise); "
        "default none: the whole recording, in fixed chunks",
    )
    parser.add_argument(
        "--max_line_chars",
        type=int,
        default=subtitles.MAX_LINE_CHARS,
        help=f"subtitle line length; a cue has at most {subtitles.LINES} lines (default %(default)s)",
    )
    parser.add_argument(
        "--max_cue_seconds",
        type=float,
        default=subtitles.MAX_CUE_SECONDS,
        help=f"longest subtitle cue (default %(default)s); a pause of {subtitles.PAUSE_SECONDS:g} s always "
        "ends one, and a single longer word is a cue of its own",
    )
    parser.add_argument(
        "--chunk_seconds",
        type=float,
        default=CHUNK_SECONDS,
        help="longer recordings run in overlapping windows of this length, so memory stays bounded; "
        "0 = never chunk (default: %(default)s)",
    )
    parser.add_argument(
        "--chunk_overlap",
        type=float,
        default=CHUNK_OVERLAP,
        help="seconds shared by neighbouring windows; they are stitched at its middle (default: %(default)s)",
    )
    parser.add_argument(
        "--pad_leading",
        type=int,
        default=None,
        help=f"zero feature frames prepended before the model (default: the model's own: {PAD_LEADING}, as "
        "`jasper infer` does, or 0 for NeMo models)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default=None,
        help="fp32 (default), bf16 (faster on CPUs with AVX512-BF16 or AMX and on GPUs), fp16 (CUDA only), "
        "int8 (CPU: int8 convolutions whose activation ranges are calibrated on the first 30 s of the "
        "first --calibration_files inputs; not with --stream); docs/benchmarks.md gives each one's WER cost",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="torch",
        help="torch (default): eager PyTorch; onnxruntime: the acoustic model exported to ONNX (cached in "
        "$XDG_CACHE_HOME/jasper/onnxruntime) and run in ONNX Runtime on the CPU, fp32 or int8; needs "
        ".[export]",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile at bucketed lengths (--engine torch, not int8; each new "
        "length bucket compiles once, tens of seconds on a CPU)",
    )
    parser.add_argument(
        "--calibration_files",
        type=int,
        default=4,
        help="inputs whose first 30 s calibrate --precision int8 (default: %(default)s)",
    )
    parser.add_argument("--amp", action="store_true", help="the same as --precision fp16 (CUDA only)")
    parser.add_argument(
        "--lm",
        default=None,
        help="decode with CTC beam search and this n-gram LM (a `jasper lm build` directory); word times "
        "are then kept only where the beam and greedy words agree",
    )
    parser.add_argument(
        "--beam_width", type=int, default=64, help="beams kept per frame with --lm (default 64)"
    )
    parser.add_argument(
        "--hotwords",
        default=None,
        metavar='"WORD[:WEIGHT] ..."',
        help="words to favour in beam search (names, jargon), each with an optional weight (default "
        "--hotword_weight); beam search runs with or without --lm",
    )
    parser.add_argument("--hotwords_file", default=None, help="the same, WORD[:WEIGHT] items in a text file")
    parser.add_argument(
        "--hotword_weight", type=float, default=DEFAULT_HOTWORD_WEIGHT, help="weight of a hotword without one"
    )
    parser.add_argument("--alpha", type=float, default=None, help="LM weight (default: the LM's tuned.json)")
    parser.add_argument("--beta", type=float, default=None, help="word bonus (default: the LM's tuned.json)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable input (default: report it on stderr, skip it, go on, exit 3)",
    )
    stream = parser.add_argument_group("streaming (--stream)")
    stream.add_argument(
        "--stream",
        action="store_true",
        help="read one input (a file, or - for stdin) block by block and print each word as soon as it is "
        "final (txt: words on one line; json: one object per word), in bounded memory; greedy decoding",
    )
    stream.add_argument(
        "--stream_chunk",
        type=float,
        default=streaming.CHUNK_SECONDS,
        help="seconds of audio decoded per step (default: %(default)s)",
    )
    stream.add_argument(
        "--stream_context",
        type=float,
        default=streaming.CONTEXT_SECONDS,
        help="seconds of audio before each chunk that its window includes (default: %(default)s)",
    )
    stream.add_argument(
        "--stream_lookahead",
        type=float,
        default=streaming.LOOKAHEAD_SECONDS,
        help="seconds after each chunk that its window waits for; a word is final at most chunk + "
        "lookahead seconds after its audio, plus compute (default: %(default)s)",
    )
    stream.add_argument(
        "--raw_pcm",
        action="store_true",
        help="stdin is raw signed 16-bit little-endian mono PCM at 16 kHz (default: a soundfile format "
        "that can come through a pipe: WAV, OGG, AU...)",
    )


def run(args: argparse.Namespace) -> int:
    spec = model_spec(args)
    if not spec:
        print(f"jasper transcribe: error: {NO_CHECKPOINT}", file=sys.stderr)
        return 2
    if 0 < args.chunk_seconds <= args.chunk_overlap:
        raise config.ConfigError("--chunk_overlap must be shorter than --chunk_seconds")
    precision = args.precision or ("fp16" if args.amp else "fp32")
    weights = "fp32" if precision == "int8" else precision  # int8 is made from the float model
    if args.stream:
        if len(args.inputs) != 1 or args.lm or args.hotwords or args.output_dir or args.format == "all":
            raise config.ConfigError(
                "--stream takes one input (a file or -) and no --lm, --hotwords, --output_dir or --format all"
            )
        if args.vad == "silero" and speech.silero_missing():
            raise config.ConfigError(str(speech.silero_missing()))
        if precision == "int8":
            raise config.ConfigError("--precision int8 calibrates on input files: not with --stream")
        pipe = load(spec, args.model_config, args.ema, args.override_config, args.device, weights)
        use_engine(args, pipe, precision, [])
        return run_stream(args, pipe)
    if args.vad == "silero" and speech.silero_missing():
        raise config.ConfigError(str(speech.silero_missing()))
    skipped = Skipped("transcribe", strict=args.strict)
    files = audio_files(args.inputs, skipped)
    formats = FORMATS if args.format == "all" else (args.format,)
    if not args.output_dir and (args.format == "all" or (args.format in PER_FILE and len(files) > 1)):
        raise config.ConfigError(
            f"--format {args.format} writes a file per input and format: give --output_dir "
            f"({len(files)} input file(s))"
        )
    pipe = load(spec, args.model_config, args.ema, args.override_config, args.device, weights)
    args.pad_leading = pipe.pad_leading if args.pad_leading is None else args.pad_leading
    use_engine(args, pipe, precision, [f for f, _ in files])
    beam = None
    hotwords = read_hotwords(args, pipe.tokenizer.labels)
    if args.lm or hotwords:
        from jasper.lm.beam import BeamSearchDecoder

        beam = BeamSearchDecoder(
            pipe.tokenizer.labels,
            args.lm,
            beam_width=args.beam_width,
            alpha=args.alpha,
            beta=args.beta,
            hotwords=hotwords,
        )
    results = iter_transcribe(
        [f for f, _ in files],
        pipe.model,
        pipe.features,
        pipe.tokenizer,
        args.chunk_seconds,
        args.chunk_overlap,
        args.pad_leading,
        beam_decoder=beam,
        on_error=skipped.add,
        vad=args.vad,
    )
    names = {path: name for path, name in files}
    out_dir = Path(args.output_dir) if args.output_dir else None
    done = 0
    cue_options = {"max_line_chars": args.max_line_chars, "max_cue_seconds": args.max_cue_seconds}
    for result in results:
        done += 1
        name = names[result.path]
        if out_dir is None:
            if args.format == "txt":
                print(f"{result.path}\t{result.text}", flush=True)
            else:
                print(render(result, args.format, cue_options, one_line=True), end="", flush=True)
            continue
        for fmt in formats:
            target = (out_dir / name).with_suffix(f".{fmt}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render(result, fmt, cue_options), encoding="utf-8")
            print(f"{result.path} -> {target}", file=sys.stderr)
    return skipped.finish(done)


def read_hotwords(args: argparse.Namespace, labels: tuple[str, ...]) -> dict[str, float]:
    """--hotwords and --hotwords_file as {word: weight}; a ConfigError names a bad one."""
    items = (args.hotwords or "").split()
    if args.hotwords_file:
        try:
            items += Path(args.hotwords_file).read_text(encoding="utf-8").split()
        except OSError as e:
            raise config.ConfigError(f"--hotwords_file {args.hotwords_file}: {e.strerror}") from None
    try:
        return parse_hotwords(items, labels, args.hotword_weight)
    except ValueError as e:
        raise config.ConfigError(str(e)) from None


def render(result: Result, fmt: str, cue_options: dict, one_line: bool = False) -> str:
    """A result in one output format, ending with a newline (json: one line with `one_line`)."""
    if fmt == "json":
        return json.dumps(result.to_json(), indent=None if one_line else 1, ensure_ascii=False) + "\n"
    if fmt == "srt":
        return result.to_srt(**cue_options)
    if fmt == "vtt":
        return result.to_vtt(**cue_options)
    if fmt == "tsv":
        return result.to_tsv()
    return result.text + "\n"


def use_engine(args: argparse.Namespace, pipe: Pipeline, precision: str, paths: list[Path]) -> None:
    """Swap `pipe.model` for what `--engine` and int8 run (`jasper.inference.engines`), calibrated on
    `paths`."""
    engines.check(args.engine, precision, pipe.device)
    if args.engine != "torch" or precision == "int8":
        calibration = []
        if precision == "int8":
            files = max(args.calibration_files, 1)
            calibration = calibration_inputs(paths, pipe.features, args.pad_leading, files)
            if not calibration:
                raise config.ConfigError("--precision int8: none of the inputs could be read to calibrate on")
        pipe.model = engines.prepare(pipe.model, args.engine, precision, calibration)
    if args.compile:
        pipe.model = engines.graphed(pipe.model, "compile", pipe.device, precision)


def run_stream(args: argparse.Namespace, pipe: Pipeline) -> int:
    """`--stream`: words to stdout as they become final, the stream's speed to stderr."""
    try:
        streamer = streaming.StreamingTranscriber(
            pipe.model,
            pipe.features,
            pipe.tokenizer,
            args.stream_chunk,
            args.stream_context,
            args.stream_lookahead,
            vad=args.vad,
        )
    except ValueError as e:  # the options' bounds: a one-line error, not a traceback
        raise config.ConfigError(f"--stream_*: {e}") from None
    blocks = streaming.read_blocks(args.inputs[0], pipe.features.sample_rate, raw=args.raw_pcm)
    count, cues_written = 0, 0
    builder = subtitles.CueBuilder(args.max_line_chars, args.max_cue_seconds)
    header = {"vtt": "WEBVTT\n", "tsv": subtitles.TSV_HEADER}.get(args.format)
    if header:
        print(header, flush=True)

    def write_cues(cues: list[subtitles.Cue]) -> None:  # as each cue becomes final
        nonlocal cues_written
        if cues and args.format in ("srt", "vtt"):
            text = (
                subtitles.to_srt(cues, cues_written + 1)
                if args.format == "srt"
                else subtitles.to_vtt(cues, False)
            )
            print(text, end="", flush=True)
            cues_written += len(cues)

    for word in streaming.transcribe_stream(blocks, streamer):
        if args.format == "json":
            print(json.dumps({"word": word.word, "start": round(word.start, 3), "end": round(word.end, 3)}))
        elif args.format == "tsv":
            print(subtitles.to_tsv([word], header=False), end="")
        elif args.format in ("srt", "vtt"):
            write_cues(builder.add(word))
        else:
            print(("" if count == 0 else " ") + word.word, end="")
        sys.stdout.flush()
        count += 1
    write_cues(builder.finish())
    if args.format == "txt":
        print(flush=True)
    stats = streamer.stats
    latency = (
        percentiles(np.array(stats.compute_seconds) * 1000, (50, 90, 100)) if stats.compute_seconds else {}
    )
    chunks = len(stats.audio_seconds)
    print(
        f"jasper transcribe: streamed {sum(stats.audio_seconds):.1f} s of audio in {chunks} chunks, "
        f"{count} words, real-time factor {stats.real_time_factor:.4f}"
        + (f" ({stats.skipped} chunks without speech skipped)" if args.vad != "none" else "")
        + "; compute per chunk "
        + ", ".join(f"p{int(q)} {v:.1f} ms" for q, v in latency.items()),
        file=sys.stderr,
    )
    return 0
