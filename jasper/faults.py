"""Bad inputs in batch tools: each one reported, skipped and counted, so one file never stops a batch.

Users run `transcribe`, `infer`, `data prepare`, `data synth` and `lm build` over thousands of
inputs. One empty, truncated or mislabelled file must cost that file, not the run. A tool gives
each bad input to a `Skipped` as it meets it: the path and the reason go to stderr at once, the
tool goes on, and at the end `finish` prints a summary (N done, M skipped, by reason) and returns
the exit code: 0 when nothing was skipped, `SKIPPED_EXIT` (3) otherwise, so a script can tell
"finished, but look" (3) from "failed" (2, `jasper`'s code for a bad config, checkpoint or file
given alone) and from success (0). With `strict` the first bad input stops the tool with that
input's own error, as before this module existed.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SKIPPED_EXIT = 3


class BadInput(RuntimeError):
    """A bad input met in `strict` mode whose error came as text (from a loader worker)."""


def reason_of(error: BaseException | str, item: str | Path) -> str:
    """The error's message without the leading `<item>: ` that jasper's errors start with."""
    message = str(error)
    prefix = f"{item}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def kind_of(reason: str) -> str:
    """The reason's kind for the summary: its text before any parenthesised detail."""
    return reason.split(" (", 1)[0].strip() or "unknown"


@dataclass
class Skipped:
    """The bad inputs of one tool run, reported on stderr as they come."""

    tool: str
    strict: bool = False
    echo: bool = True  # print each skip as it comes
    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, item: str | Path, error: BaseException | str) -> None:
        """Report `item` as skipped because of `error`; with `strict`, raise `error` instead."""
        if self.strict:
            raise error if isinstance(error, BaseException) else BadInput(error)
        reason = reason_of(error, item)
        self.items.append((str(item), reason))
        if self.echo:
            print(f"jasper {self.tool}: skipped {item}: {reason}", file=sys.stderr, flush=True)

    def add_message(self, message: str) -> None:
        """`add` for an error that came as text (`<path>: <reason>`, from a worker): the path leads it."""
        self.add(message.split(": ", 1)[0], message)

    def summary(self, done: int, noun: str = "files") -> str:
        """`12 files done, 2 skipped (unreadable audio: 1, non-finite samples: 1)`."""
        line = f"{done} {noun} done, {len(self.items)} skipped"
        if self.items:
            kinds = Counter(kind_of(reason) for _, reason in self.items)
            line += " (" + ", ".join(f"{kind}: {n}" for kind, n in kinds.most_common()) + ")"
        return line

    def finish(self, done: int, noun: str = "files") -> int:
        """Print the summary on stderr and return the tool's exit code."""
        print(f"jasper {self.tool}: {self.summary(done, noun)}", file=sys.stderr, flush=True)
        return SKIPPED_EXIT if self.items else 0
