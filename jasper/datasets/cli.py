"""`jasper data <step>`: download LibriSpeech, prepare it (WAV + manifests), render a synthetic corpus."""

from __future__ import annotations

import argparse
import importlib

STEPS: dict[str, tuple[str, str]] = {
    "download": (
        "jasper.datasets.download",
        "download and extract LibriSpeech archives (resumable, MD5-checked)",
    ),
    "prepare": ("jasper.datasets.prepare", "convert LibriSpeech FLAC to 16 kHz WAV and write manifests"),
    "synth": ("jasper.datasets.synthetic", "render an offline synthetic speech corpus with TTS voices"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="step", metavar="STEP", required=True)
    for name, (module_name, help_text) in STEPS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_step=module)


def run(args: argparse.Namespace) -> int:
    return int(args._step.run(args) or 0)
