"""One training step of a model, timed in parts: forward + backward, and the optimizer step.

Random features and targets of a fixed shape (no data loading, no features), so the figure is the
model and optimizer alone; `docs/benchmarks.md` quotes it for jasper10x5dr's Novograd step on CPU.
`--amp` runs the forward under bf16 autocast (CUDA: fp16) as `jasper train --amp` does; `--compile`
runs the model through torch.compile at the bucketed length `jasper train --compile` uses, and
reports the compile time of the first step apart.

    python benchmarks/train_step.py [--model_config CFG] [--batch 2] [--seconds 2] [--steps 5]
        [--optimizer adamw] [--amp] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from jasper import config, graphs
from jasper.model import Jasper
from jasper.training.loss import ctc_loss
from jasper.training.optim import OPTIMIZERS, build_optimizer

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "jasper10x5dr_speedp-online_speca.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_config", default=str(CONFIG))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="utterance length (100 frames a second)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps, after one untimed")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="novograd")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (as jasper train --amp on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (jasper.graphs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = config.load(args.model_config)
    model = Jasper.from_config(cfg).train()
    forward = graphs.Compiled(model) if args.compile else model
    optimizer = build_optimizer(args.optimizer, model.parameters(), lr=1e-3, weight_decay=1e-3)
    frames, blank = int(args.seconds * 100), len(cfg["labels"])
    x = torch.randn(args.batch, 64, frames)
    x_lens = torch.full((args.batch,), frames)
    targets = torch.randint(0, blank, (args.batch, max(1, frames // 10)))
    target_lens = torch.full((args.batch,), targets.shape[1])
    totals, steps = [], []
    for i in range(args.steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp):
            log_probs, out_lens = forward(x, x_lens)
        ctc_loss(log_probs, out_lens, targets, target_lens, blank).mean().backward()
        before_step = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if i:
            totals.append(end - start)
            steps.append(end - before_step)
    how = ("bf16 autocast" if args.amp else "fp32") + (", torch.compile" if args.compile else ", eager")
    compiled = f"; compiling took {forward.compile_seconds:.1f} s" if args.compile else ""
    print(
        f"{Path(args.model_config).name}, batch {args.batch} x {args.seconds:g} s, {args.optimizer}, {how}, "
        f"{args.threads} threads: step {statistics.median(totals):.3f} s (median of {args.steps}), "
        f"of which optimizer.step() {statistics.median(steps):.3f} s; "
        f"{args.batch * args.seconds / statistics.median(totals):.0f} audio-s/s{compiled}"
    )


if __name__ == "__main__":
    main()
