"""`jasper <command>`: one entry point, one module per command.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`. Modules are imported
only when their command runs, so `jasper --help` stays fast and a command's heavy dependencies
never slow down another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "model-info": ("jasper.model_info", "print blocks, parameters, receptive field and GFLOPs of a config"),
    "data": ("jasper.datasets.cli", "download and prepare LibriSpeech, or render a synthetic TTS corpus"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser, with arguments only for `command` (others are listed but not imported)."""
    parser = argparse.ArgumentParser(
        prog="jasper",
        description="Jasper speech recognition: data, training, evaluation, benchmarks, export and serving.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or help_text).strip()
        p = sub.add_parser(
            name, help=help_text, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    from jasper.audio import AudioError
    from jasper.checkpoint import CheckpointError
    from jasper.config import ConfigError

    try:
        return int(args._module.run(args) or 0)
    except (ConfigError, CheckpointError, AudioError) as e:
        # Expected user errors (bad config, checkpoint, audio file): one line, no traceback.
        print(f"jasper {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
