"""Stopping a training job cleanly: SIGINT and SIGTERM become a checkpoint at the next step boundary.

Data-loader workers ignore both signals, so the main process alone decides when to stop and ends
the step (and the workers) itself.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger("jasper.training.train")


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (preemption) ask for a clean stop at the next step boundary.

    The job then checkpoints its exact position and exits with 128 + the signal number. The
    previous handler is put back after the first signal, so a second Ctrl-C interrupts at once.
    Only the main thread can install handlers; elsewhere signals keep their usual effect.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> StopSignals:
        self.received = 0
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        signal.signal(signum, self._previous[signum])
        log.warning("%s received: stopping after this step with a checkpoint", signal.Signals(signum).name)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the main process, which ends the step and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
