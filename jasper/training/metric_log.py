"""The training log: NVIDIA's DLLogger shapes (stdout `DLL` lines, `DLLL {json}` lines in nvlog.json)
and TensorBoard runs, written by `jasper train` and read back by the report and `train-benchmark`.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from jasper import distributed

# Metric name suffix -> (label, unit, format) for the DLLogger-style stdout line.
METRICS = {
    "loss": ("loss", "", ">8.3f"),
    "wer": ("wer", "%", ">6.2f"),
    "cer": ("cer", "%", ">6.2f"),
    "throughput": ("utts/s", "", ">7.1f"),
    "audio_rate": ("audio s/s", "", ">7.1f"),
    "took": ("took", "s", ">6.3f"),
    "wait": ("wait", "s", ">6.3f"),
    "wait_share": ("wait", "%", ">5.1f"),
    "lrate": ("lrate", "", ">9.3e"),
    "skipped_steps": ("skipped steps", "", ""),
    "skipped_files": ("skipped files", "", ""),
    "skipped_steps_rank_min": ("skipped steps (fewest of a rank)", "", ""),
    "skipped_steps_rank_max": ("skipped steps (most of a rank)", "", ""),
    "benchmark_epochs_num": ("epochs", "", ""),
    "compiles": ("compiled shapes", "", ""),
    "compile_seconds": ("compiling", "s", ">6.1f"),
}
SUBSETS = ("train_avg", "dev_ema", "train", "dev")  # longest prefix first


@dataclass
class Totals:
    """Sums over steps (on this rank), so that rates are totals over time rather than means of rates."""

    steps: int = 0
    finite_steps: int = 0
    loss: float = 0.0
    utts: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    wait: float = 0.0
    skipped_files: int = 0

    def add(self, step: Any) -> None:
        """Count one step (a `jasper.training.train.Step`: ok, loss, utts, audio_seconds, seconds, wait,
        bad_files)."""
        self.steps += 1
        self.finite_steps += step.ok
        self.loss += step.loss if step.ok else 0.0
        self.utts += step.utts
        self.audio_seconds += step.audio_seconds
        self.seconds += step.seconds
        self.wait += step.wait
        self.skipped_files += step.bad_files

    def global_rates(self, device: torch.device) -> dict[str, float]:
        """Loss, utterances/s and audio seconds/s over all ranks (timed by this rank: ranks run in step)."""
        loss, finite, utts, audio, files = distributed.sum_over_ranks(
            [self.loss, self.finite_steps, self.utts, self.audio_seconds, self.skipped_files], device
        )
        seconds = max(self.seconds, 1e-9)
        rates = {"throughput": utts / seconds, "audio_rate": audio / seconds, "files": files}
        if finite:
            rates["loss"] = loss / finite
        return rates


class MetricLogger:
    """Training records in NVIDIA's DLLogger shapes: stdout lines, `DLLL {json}` lines, TensorBoard.

    Only rank 0 writes. Unlike the reference, the JSON log receives the metric records too (its
    DLLogger verbosity mismatch left only parameters there). TensorBoard gets one run per subset
    (`train`, `dev`, `dev_ema`) under the output directory, scalars keyed by update number.
    """

    def __init__(self, path: Path, tensorboard_dir: Path, subsets: tuple[str, ...], enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.time()
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # slow import: rank 0 only

        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a")
        self.writers = {
            s: SummaryWriter(str(tensorboard_dir / s), flush_secs=120, max_queue=200) for s in subsets
        }
        for subset in subsets + ("train_avg",):
            for suffix, (_label, unit, fmt) in METRICS.items():
                self._write(
                    {
                        "type": "METADATA",
                        "metric": f"{subset}_{suffix}",
                        "metadata": {"unit": unit or None, "format": f":{fmt}"},
                    }
                )

    def _write(self, record: dict[str, Any]) -> None:
        now = time.time()
        head = {
            "timestamp": now,
            "datetime": datetime.datetime.fromtimestamp(now).isoformat(sep=" "),
            "elapsedtime": now - self.start,
        }
        self.file.write("DLLL " + json.dumps({**head, **record}, default=json_value) + "\n")
        self.file.flush()

    def parameters(self, params: dict[str, Any]) -> None:
        if self.enabled:
            self._write({"type": "LOG", "step": "PARAMETER", "data": params})

    def log(
        self, step: tuple[int, ...], global_step: int, train_seconds: float, data: dict[str, float]
    ) -> None:
        """One record: `step` is (epoch, iter, iters per epoch), (epoch,) or () for the run.

        `train_seconds` is the training time of all runs so far (the clock of the time budget and of
        the checkpoints), so curves drawn from a log that resumed runs append to need no
        reconstruction; `elapsedtime` keeps DLLogger's meaning (wall time since this run began).
        """
        if not self.enabled:
            return
        clean = {k: json_value(v) for k, v in data.items()}
        self._write({"type": "LOG", "train_seconds": train_seconds, "step": list(step), "data": clean})
        if len(step) == 3:
            where = f"epoch {step[0]:>4} | iter {step[1]:>{len(str(step[2]))}}/{step[2]}"
        else:
            where = f"epoch {step[0]:>4}" if step else "run"
        fields = []
        for key, value in data.items():
            subset = next(s for s in SUBSETS if key.startswith(s + "_"))
            label, unit, fmt = METRICS[key[len(subset) + 1 :]]
            text = format(value, fmt) if math.isfinite(value) else str(value)
            prefix = "" if subset == "train" else subset + " "
            fields.append(f"{prefix}{label} {text}{' ' + unit if unit else ''}")
            if subset in self.writers and math.isfinite(value):
                self.writers[subset].add_scalar(key[len(subset) + 1 :], value, global_step)
        stamp = datetime.datetime.now().isoformat(sep=" ", timespec="microseconds")
        tqdm.write(f"DLL {stamp} - {where} | " + " | ".join(fields), file=sys.stdout)  # above a live bar
        sys.stdout.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            for writer in self.writers.values():
                writer.close()


def json_value(value: Any) -> Any:
    """JSON has no inf/NaN: write them as null. Tensors and paths become numbers and strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value
