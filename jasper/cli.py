"""`jasper <command>`: one entry point, one module per command.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`. A group (`jasper data
download`) maps its sub-commands to modules the same way. Only the module of the command being run
is imported, so `jasper --help` is instant and one command's dependencies never slow another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

Entry = tuple[str, str]  # (module, one-line help)
GROUP_HELP = {"data": "download and prepare LibriSpeech, render a synthetic TTS corpus, or check manifests"}
COMMANDS: dict[str, Entry | dict[str, Entry]] = {
    "quickstart": (
        "jasper.quickstart.run",
        "render a TTS corpus, train, evaluate and write a report: the whole system",
    ),
    "model-info": ("jasper.model_info", "print blocks, parameters, receptive field and GFLOPs of a config"),
    "models": (
        "jasper.hub.models",
        "list the published Jasper/QuartzNet models, download them into the cache",
    ),
    "lm": ("jasper.lm.tool", "build an n-gram word LM with KenLM, tune beam-search LM weights"),
    "train": (
        "jasper.training.train",
        "train a model (one process, or torchrun for several GPUs/CPU processes)",
    ),
    "train-benchmark": ("jasper.training.benchmark", "synthetic benchmark data; training throughput table"),
    "train-stability": (
        "jasper.training.stability",
        "train with several seeds, evaluate each: WER mean/std table",
    ),
    "infer": (
        "jasper.inference.infer",
        "evaluate on manifests (WER, predictions, logits), or transcribe files",
    ),
    "transcribe": (
        "jasper.inference.transcribe",
        "transcribe audio files or folders (text, or JSON with word times)",
    ),
    "infer-benchmark": (
        "jasper.inference.benchmark",
        "inference latency by batch size and duration: table, JSON, PNG",
    ),
    "export": (
        "jasper.inference.export",
        "export feature extractor, acoustic model and decoder to ONNX/TorchScript",
    ),
    "triton-repo": (
        "jasper.serving.repository",
        "write a Triton Inference Server model repository (cpu or gpu flavour)",
    ),
    "serve": ("jasper.serving.server", "run Triton Inference Server on a model repository until SIGTERM"),
    "client": (
        "jasper.serving.client",
        "transcribe audio files with a running Triton server (HTTP or gRPC), WER",
    ),
    "data": {
        "download": (
            "jasper.datasets.download",
            "download and extract LibriSpeech archives (resumable, MD5-checked)",
        ),
        "prepare": ("jasper.datasets.prepare", "convert LibriSpeech FLAC to 16 kHz WAV and write manifests"),
        "check": (
            "jasper.datasets.check",
            "check manifests against a model config before training: audio, transcripts, CTC lengths",
        ),
        "synth": ("jasper.datasets.synthetic", "render an offline synthetic speech corpus with TTS voices"),
        "transform": (
            "jasper.datasets.transform",
            "derive a corpus whose every training utterance has a voice, room and channel of its own",
        ),
    },
}


def _add(sub: argparse._SubParsersAction, name: str, entry: Entry, chosen: bool) -> None:
    module_name, help_text = entry
    if not chosen:
        sub.add_parser(name, help=help_text)
        return
    module = importlib.import_module(module_name)
    doc = (module.__doc__ or help_text).strip()
    p = sub.add_parser(
        name, help=help_text, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.add_arguments(p)
    p.set_defaults(_module=module)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser, with full arguments only for the command named in `argv`."""
    words = [a for a in argv if not a.startswith("-")]
    parser = argparse.ArgumentParser(
        prog="jasper",
        description="Jasper speech recognition: data, training, evaluation, benchmarks, export and serving.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, entry in COMMANDS.items():
        chosen = bool(words) and words[0] == name
        if isinstance(entry, dict):
            group = sub.add_parser(name, help=GROUP_HELP.get(name, ""), description=GROUP_HELP.get(name))
            steps = group.add_subparsers(dest="step", metavar="STEP", required=True)
            for step, step_entry in entry.items():
                _add(steps, step, step_entry, chosen and len(words) > 1 and words[1] == step)
        else:
            _add(sub, name, entry, chosen)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    from jasper.audio import AudioError
    from jasper.checkpoint import CheckpointError
    from jasper.config import ConfigError
    from jasper.faults import BadInput

    try:
        return int(args._module.run(args) or 0)
    except (ConfigError, CheckpointError, AudioError, BadInput) as e:
        # Expected user errors (bad config, manifest, checkpoint, audio file): one line, no traceback.
        print(f"jasper {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
