"""The options of a training run: the reference train.py's flags (same names and defaults), jasper's
additions, and the checks that reject a combination that cannot work before anything is loaded.

Kept apart from the loop in `train.py` so that the loop reads top to bottom; `scripts/train.sh`
translates its environment variables into these flags.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from jasper import config
from jasper.training.optim import LR_POLICIES, OPTIMIZERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every argument of the reference train.py (same names and defaults) plus jasper's additions."""
    _data_arguments(parser)
    _schedule_arguments(parser)
    _hardware_arguments(parser)
    _checkpoint_arguments(parser)
    _logging_arguments(parser)


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data and output")
    g.add_argument("--model_config", required=True, help="model config YAML (e.g. configs/tiny.yaml)")
    g.add_argument(
        "--train_manifests", nargs="+", required=True, help="training manifests (JSON / JSON lines)"
    )
    g.add_argument(
        "--val_manifests", nargs="+", required=True, help="dev manifests, evaluated with input_val"
    )
    g.add_argument("--dataset_dir", required=True, help="root directory of the manifests' relative paths")
    g.add_argument("--output_dir", required=True, help="checkpoints, nvlog.json and TensorBoard runs go here")
    g.add_argument(
        "--log_file", default=None, help="JSON-lines log (default: OUTPUT_DIR/nvlog.json, appended)"
    )
    config.add_override_argument(g)
    g.add_argument(
        "--num_workers",
        type=int,
        default=2,
        help="data loader worker processes per rank (0: load in-process, each batch on the training "
        "threads while training waits: the fastest where workers would share the cores with training, "
        "as on a 2-core CPU; docs/benchmarks.md 'The training loop's overhead')",
    )
    g.add_argument(
        "--audio_cache_gb",
        type=float,
        default=4.0,
        help="decode and trim the train and dev audio once, before the first step, and keep it in memory "
        "(float32) when it fits in this many GB per process: later epochs then cost the loader only the "
        "perturbations (0: off; LibriSpeech's 960 h would need about 220 GB and is read from disk)",
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first missing or unreadable audio file, and before the first step when the "
        "manifest check finds what would break training or lose data (default: warn, skip bad files "
        "and count them in each epoch's record; a missing manifest or config always stops)",
    )
    g.add_argument(
        "--dali_device",
        choices=("none", "cpu", "gpu"),
        default="gpu",
        help="accepted for compatibility with the reference scripts; DALI is not used: every value "
        "behaves as 'none' (audio is decoded in loader workers, features are computed on --device)",
    )


def _schedule_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("schedule")
    g.add_argument("--epochs", type=int, default=400, help="total epochs; drives the LR schedule")
    g.add_argument("--warmup_epochs", type=int, default=0, help="linear LR warmup, from the first update")
    g.add_argument("--hold_epochs", type=int, default=0, help="epochs at the peak LR after warmup")
    g.add_argument(
        "--epochs_this_job", type=int, default=0, help="stop after this many epochs in this job (0: no limit)"
    )
    g.add_argument(
        "--time_limit_minutes",
        type=float,
        default=0.0,
        help="training-time budget, counted across resumed jobs (checkpoints record the time spent): "
        "when spent, stop at the step boundary, checkpoint and run the final evaluation (0: none)",
    )
    g.add_argument(
        "--stop_after_steps",
        type=int,
        default=0,
        help="stop after this many updates in this job, like a time limit (smoke tests, debugging; 0: none)",
    )
    g.add_argument(
        "--batch_size",
        type=int,
        default=32,
        help="utterances PER PROCESS per optimizer step; each forward pass takes "
        "batch_size / grad_accumulation_steps of them (must divide). The global batch is this x processes",
    )
    g.add_argument(
        "--grad_accumulation_steps", type=int, default=1, help="micro-batches summed into each update"
    )
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    g.add_argument("--min_lr", type=float, default=1e-5, help="LR floor, applied in every phase")
    g.add_argument(
        "--lr_policy",
        choices=LR_POLICIES,
        default="exponential",
        help="exponential: per-epoch staircase lr_exp_gamma^(epoch - warmup - hold); "
        "legacy: polynomial (power 2) decay to min_lr at the last epoch",
    )
    g.add_argument(
        "--lr_exp_gamma", type=float, default=0.99, help="decay per epoch of the exponential policy"
    )
    g.add_argument(
        "--lr_schedule_by",
        choices=("epochs", "time"),
        default="epochs",
        help="epochs: the schedule follows updates and epochs (reference). time: it follows the spent "
        "fraction of --time_limit_minutes, as if --epochs epochs fit exactly in the budget, so warmup, "
        "hold and decay (legacy: down to min_lr) end with the time limit",
    )
    g.add_argument(
        "--optimizer", choices=OPTIMIZERS, default="novograd", help="novograd (recipe), adamw, sgd"
    )
    g.add_argument("--weight_decay", type=float, default=1e-3, help="weight decay of the optimizer")
    g.add_argument("--ema", type=float, default=0.0, help="decay of the EMA weights (0: no EMA model)")
    g.add_argument(
        "--seed",
        type=int,
        default=42,
        help="seed: initial weights, batch order and speed perturbation use it on every rank; rank r "
        "draws dither, SpecAugment masks and dropout from seed + r",
    )


def _hardware_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("hardware and precision")
    g.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    g.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default)"
    )
    g.add_argument(
        "--amp",
        "--fp16",
        action="store_true",
        help="mixed precision: autocast with --amp_dtype (CUDA: float16 with a GradScaler by default, or "
        "bfloat16 without one; CPU: bfloat16, faster only on CPUs with AVX512-BF16 or AMX)",
    )
    g.add_argument(
        "--amp_dtype", choices=("float16", "bfloat16"), default=None, help="AMP dtype (default: see --amp)"
    )
    g.add_argument(
        "--cudnn_benchmark",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let cuDNN autotune convolutions (on by default; --no-cudnn_benchmark turns it off)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile (inductor), its time axis padded to length buckets (26 "
        "for 2-17 s) so it compiles once per bucket met, not per batch; the log counts them. Off by "
        "default: on a 2-core CPU a step was 1.00-1.15x faster and each bucket took about 25 s to compile "
        "(docs/benchmarks.md 'Compiled graphs on CPU'). A CPU needs a C++ compiler and the Python headers",
    )
    g.add_argument(
        "--pre_allocate_range",
        type=int,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="before training, run forward+backward on random features of MIN..MAX frames (step pad_align) "
        "to warm up the allocator and cuDNN autotuning; weights and BN statistics are left unchanged",
    )
    g.add_argument(
        "--local_rank",
        "--local-rank",
        type=int,
        default=int(os.environ.get("LOCAL_RANK", 0)),
        help="accepted for torch.distributed.launch compatibility and ignored: LOCAL_RANK/RANK/WORLD_SIZE "
        "come from the environment (torchrun)",
    )


def _checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("checkpoints")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest readable Jasper_epoch*_checkpoint.pt in OUTPUT_DIR (mid-epoch too)",
    )
    g.add_argument(
        "--ckpt",
        default=None,
        help="initial weights (and EMA weights) for fine-tuning, used when --resume finds nothing: a "
        "checkpoint, a published model's name (`jasper models`), a .nemo file or a URL; optimizer and "
        "counters start fresh",
    )
    g.add_argument(
        "--freeze",
        choices=("none", "encoder"),
        default="none",
        help="fine-tuning: keep the encoder's weights fixed, so only the decoder learns (docs/finetuning.md)",
    )
    g.add_argument(
        "--unfreeze_after_steps",
        type=int,
        default=0,
        help="with --freeze encoder: train the whole model from this update on (0: frozen for the whole run)",
    )
    g.add_argument(
        "--freeze_bn",
        action="store_true",
        help="while the encoder is frozen, keep its BatchNorm statistics too (eval mode)",
    )
    g.add_argument("--save_frequency", type=int, default=10, help="save a checkpoint every N epochs")
    g.add_argument(
        "--keep_milestones",
        type=int,
        nargs="*",
        default=[100, 200, 300],
        help="epochs whose checkpoints are always saved and never pruned (others: last two kept)",
    )
    g.add_argument(
        "--keep_every",
        type=int,
        default=0,
        help="also save and keep every N-th epoch's checkpoint, as milestones (0: off); the quickstart "
        "evaluates them for its error-rate-vs-minutes curve",
    )
    g.add_argument(
        "--save_best_from",
        type=int,
        default=380,
        help="from this epoch on, keep Jasper_best_checkpoint.pt for the lowest dev WER (EMA's when --ema)",
    )


def _logging_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("logging and evaluation")
    g.add_argument("--eval_frequency", type=int, default=200, help="evaluate on the dev set every N updates")
    g.add_argument("--log_frequency", type=int, default=25, help="log a training record every N updates")
    g.add_argument(
        "--prediction_frequency",
        type=int,
        default=100,
        help="print a decoded/reference pair of the current batch every N updates",
    )
    g.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="a progress bar per epoch on stderr with loss, LR and utterances/s (auto: when stderr is "
        "a terminal; the DLL lines and the JSON log are written either way)",
    )
    g.add_argument(
        "--benchmark_epochs_num",
        type=int,
        default=1,
        help="the final train_avg throughput averages this many last epochs",
    )


def check(args: argparse.Namespace) -> str | None:
    """The reason `args` cannot work, or None."""
    if args.batch_size < 1 or args.grad_accumulation_steps < 1:
        return "--batch_size and --grad_accumulation_steps must be positive"
    if args.batch_size % args.grad_accumulation_steps:
        return (
            f"--batch_size {args.batch_size} is not divisible by "
            f"--grad_accumulation_steps {args.grad_accumulation_steps}"
        )
    if args.lr_schedule_by == "time" and args.time_limit_minutes <= 0:
        return "--lr_schedule_by time needs --time_limit_minutes"
    for name in ("eval_frequency", "log_frequency", "prediction_frequency", "save_frequency", "epochs"):
        if getattr(args, name) < 1:
            return f"--{name} must be at least 1"
    if args.keep_every < 0:
        return "--keep_every must be 0 (off) or more"
    if args.unfreeze_after_steps < 0:
        return "--unfreeze_after_steps must be 0 (never) or more"
    if args.freeze == "none" and (args.unfreeze_after_steps or args.freeze_bn):
        return "--unfreeze_after_steps and --freeze_bn need --freeze encoder"
    return None


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The command line as plain values (what a checkpoint and the log record)."""
    plain = (str, int, float, bool, list, type(None))
    return {k: v for k, v in vars(args).items() if not k.startswith("_") and isinstance(v, plain)}
