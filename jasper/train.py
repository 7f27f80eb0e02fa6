"""Train a Jasper/QuartzNet CTC model: `jasper train` (one process) or `torchrun ... -m jasper.cli train`.

The reference recipe (NVIDIA's train.py): CTC loss averaged over the batch, Novograd, the
`exponential`/`legacy` LR policies, weight decay, gradient accumulation, EMA weights, SpecAugment and
speed perturbation from the config's `input_train` section, dev WER every `--eval_frequency` steps,
and checkpoints named and keyed as the reference's (`Jasper_epoch{E}_checkpoint.pt`).

What differs, on purpose:
  * CPU works (DDP over gloo when launched with torchrun); CUDA uses NCCL, fp16 AMP with a
    GradScaler or bf16 AMP without one.
  * The LR schedule is applied before every update, so warmup starts at the first update.
  * A step whose loss is infinite or NaN on any rank is skipped by every rank together (the
    reference skipped NaN on one rank only, which hangs DDP, and never caught inf). Skips are counted.
  * Nothing is lost on interruption: SIGTERM/SIGINT, `--time_limit_minutes` and
    `--stop_after_steps` end the job at a step boundary with a checkpoint of the exact position
    (epoch, batches done, RNG states), and `--resume` continues mid-epoch with the same batches.
  * Checkpoints also hold `sampler`, `rng`, `config` and `args`; the best checkpoint records its
    own WER; a corrupt newest checkpoint is skipped on resume.
  * Metric records reach `nvlog.json` (the reference's logger dropped them).

Checkpoint position. An interrupted job saves `Jasper_epoch{E}_checkpoint.pt` for the epoch E it
was in, with `sampler.batches_done > 0` (updates done in E) and `epoch = E - 1` (completed
epochs, so reference tools read it as "restart epoch E"). An end-of-epoch checkpoint has
`epoch = E` and `sampler = {epoch: E + 1, batches_done: 0}`. `--resume` loads the
highest-numbered epoch checkpoint that reads, mid-epoch or not.

Stopping. After SIGTERM/SIGINT the job checkpoints and exits with 143/130, skipping the final
evaluation (a preempted job has seconds); a second Ctrl-C aborts at once. The time limit and
--stop_after_steps checkpoint, run the final evaluation and exit with 0.

Logged figures (stdout `DLL` lines, `DLLL` JSON lines in nvlog.json, TensorBoard): utts/s and
audio s/s count every rank; `took` is the whole step including waits for the data loader, and
`wait` is the part spent blocked on it (a high share means the loader is the bottleneck: raise
--num_workers). Every JSON record carries `train_seconds`, the training time of all jobs so far
(the clock of the time budget, the time-based LR schedule and the checkpoints).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from jasper import checkpoint, config, distributed
from jasper.data import (
    AudioDataset,
    Batch,
    BucketingBatchSampler,
    ManifestError,
    ShardedEvalSampler,
    build_loader,
    load_utterances,
)
from jasper.decoding import greedy_decode
from jasper.evaluation import ctc_loss, evaluate
from jasper.features import FilterbankFeatures
from jasper.metrics import word_errors
from jasper.model import Jasper
from jasper.optim import EMA, LR_POLICIES, OPTIMIZERS, build_optimizer, lr_at, set_lr
from jasper.text import Tokenizer

log = logging.getLogger(__name__)

NO_BEST = math.inf  # best_wer before any evaluation (the reference used 10**6)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every argument of the reference train.py (same names and defaults) plus jasper's additions."""
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
        help="data loader worker processes per rank (0: load in-process)",
    )
    g.add_argument(
        "--skip_bad_files",
        action="store_true",
        help="skip (and count) missing or unreadable audio files instead of stopping",
    )
    g.add_argument(
        "--dali_device",
        choices=("none", "cpu", "gpu"),
        default="gpu",
        help="accepted for compatibility with the reference scripts; DALI is not used: every value "
        "behaves as 'none' (audio is decoded in loader workers, features are computed on --device)",
    )

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

    g = parser.add_argument_group("checkpoints")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest readable Jasper_epoch*_checkpoint.pt in OUTPUT_DIR (mid-epoch too)",
    )
    g.add_argument(
        "--ckpt",
        default=None,
        help="initial weights (and EMA weights) for fine-tuning, used when --resume finds nothing; "
        "optimizer and counters start fresh",
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


def _check_args(args: argparse.Namespace) -> str | None:
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
    return None


def run(args: argparse.Namespace) -> int:
    problem = _check_args(args)
    if problem:
        print(f"jasper train: error: {problem}", file=sys.stderr)
        return 2
    ctx = distributed.init(args.device)
    _setup_logging(ctx.rank)
    if distributed.initialized():
        log.info("process group: %s backend, %d process(es)", dist.get_backend(), ctx.world_size)
    try:
        with StopSignals() as signals:
            return train(args, ctx, signals)
    except ManifestError as e:  # a user error: one line, like the config and checkpoint errors
        print(f"jasper train: error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()


@dataclass
class Progress:
    """Where training stands: what a checkpoint records so that a resumed job continues exactly here."""

    epoch: int = 1  # 1-based epoch in progress
    steps_done: int = 0  # optimizer steps done in `epoch`
    updates: int = 0  # optimizer steps done in all (skipped ones included)
    best_wer: float = NO_BEST
    skipped_steps: int = 0
    skipped_files: int = 0  # over all ranks, up to the last log/checkpoint
    train_seconds: float = 0.0  # training time of all jobs so far: the time budget spans resumes


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

    def add(
        self, ok: bool, loss: float, utts: int, audio: float, seconds: float, wait: float, files: int
    ) -> None:
        self.steps += 1
        self.finite_steps += ok
        self.loss += loss if ok else 0.0
        self.utts += utts
        self.audio_seconds += audio
        self.seconds += seconds
        self.wait += wait
        self.skipped_files += files

    def global_rates(self, device: torch.device) -> dict[str, float]:
        """Loss, utterances/s and audio seconds/s over all ranks (timed by this rank: ranks run in step)."""
        loss, finite, utts, audio, files = _sum_over_ranks(
            [self.loss, self.finite_steps, self.utts, self.audio_seconds, self.skipped_files], device
        )
        seconds = max(self.seconds, 1e-9)
        rates = {"throughput": utts / seconds, "audio_rate": audio / seconds, "files": files}
        if finite:
            rates["loss"] = loss / finite
        return rates


def train(args: argparse.Namespace, ctx: distributed.Context, signals: StopSignals) -> int:
    # ------------------------------------------------------------------ set up
    device, world, rank = ctx.device, ctx.world_size, ctx.rank
    accum = args.grad_accumulation_steps
    micro_batch = args.batch_size // accum
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True  # "FP32" on Ampere+ is TF32, as in NVIDIA's tables
        torch.backends.cudnn.allow_tf32 = True
    if args.dali_device != "none":
        log.info("--dali_device %s: DALI is not used here; behaving as 'none'", args.dali_device)

    cfg = config.load(args.model_config, args.override_config)
    tokenizer = Tokenizer(cfg["labels"])
    train_data_cfg = config.section(cfg, "input_train", "audio_dataset")
    val_data_cfg = config.section(cfg, "input_val", "audio_dataset")
    skip_bad = args.skip_bad_files
    train_utts, train_stats = load_utterances(
        args.train_manifests, args.dataset_dir, tokenizer, train_data_cfg, skip_bad=skip_bad
    )
    val_utts, val_stats = load_utterances(
        args.val_manifests, args.dataset_dir, tokenizer, val_data_cfg, skip_bad=skip_bad
    )
    log.info("train: %s", train_stats.summary())
    log.info("dev: %s", val_stats.summary())
    # Augmentation draws come from (seed, epoch, index): the same on every rank and after a resume.
    train_set = AudioDataset(train_utts, train_data_cfg, args.seed, augment=True, skip_bad=skip_bad)
    val_set = AudioDataset(val_utts, val_data_cfg, args.seed, augment=False, skip_bad=skip_bad)
    # The same seed on every rank: ranks agree on each epoch's global batches and take their slices.
    sampler = BucketingBatchSampler(
        train_set.durations(), micro_batch, num_replicas=world, rank=rank, seed=args.seed, accumulation=accum
    )
    steps_per_epoch = len(sampler) // accum
    if steps_per_epoch == 0:
        log.error(
            "%d training utterances are fewer than one global batch (%d per process x %d processes)",
            len(train_set),
            args.batch_size,
            world,
        )
        return 2
    train_loader = _loader(train_set, sampler, args.num_workers, args.seed)
    val_sampler = ShardedEvalSampler(val_set.durations(), args.batch_size, world, rank)
    val_loader = _loader(val_set, val_sampler, args.num_workers, args.seed)

    _seed_everything(args.seed)  # the same initial weights on every rank (and for any world size)
    raw_model = Jasper.from_config(cfg).to(device)
    _seed_everything(args.seed + rank)  # then each rank its own dither, masks and dropout
    train_features = FilterbankFeatures(**config.section(cfg, "input_train", "filterbank_features"))
    val_features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features"))
    train_features.to(device).train()  # SpecAugment and dither; val: eval mode, deterministic
    val_features.to(device).eval()
    optimizer = build_optimizer(
        args.optimizer, raw_model.parameters(), lr=args.lr, weight_decay=args.weight_decay
    )
    amp_dtype = _amp_dtype(args, device)
    show_progress = ctx.is_main and (
        args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if args.pre_allocate_range:
        _pre_allocate(
            raw_model,
            train_features,
            args.pre_allocate_range,
            micro_batch,
            tokenizer.blank,
            amp_dtype,
            show_progress,
        )

    # ------------------------------------------------------------------ resume, or start (fine-tuning)
    progress = Progress()
    ema = EMA(raw_model, args.ema) if args.ema > 0 else None
    found = _find_resume_checkpoint(args.output_dir, rank) if args.resume else None
    if found:
        path, ckpt = found
        checkpoint.load_state_dict(raw_model, ckpt["state_dict"], source=f"{path} [state_dict]")
        if ema:
            if not ckpt.get("ema_state_dict"):
                log.warning("%s has no EMA weights: the EMA restarts from the model's weights", path)
            ema_weights = ckpt.get("ema_state_dict") or ckpt["state_dict"]
            checkpoint.load_state_dict(ema.module, ema_weights, source=f"{path} [ema_state_dict]")
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, ValueError) as e:
            raise checkpoint.CheckpointError(
                f"{path}: its optimizer state does not fit --optimizer {args.optimizer} ({e})"
            ) from None
        if ckpt.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        progress = _restore_progress(ckpt, steps_per_epoch, sampler.global_batch)
        _restore_rng(ckpt.get("rng"), world, rank, fallback_seed=args.seed + rank + progress.updates)
        log.info(
            "resumed from %s: epoch %d with %d/%d steps done, %d updates, %.1f min trained",
            path,
            progress.epoch,
            progress.steps_done,
            steps_per_epoch,
            progress.updates,
            progress.train_seconds / 60,
        )
    elif args.ckpt:
        ckpt = checkpoint.load_weights(raw_model, args.ckpt)
        if ema:
            checkpoint.load_state_dict(
                ema.module, ckpt.get("ema_state_dict") or ckpt["state_dict"], source=f"{args.ckpt} [EMA]"
            )
        log.info("initial weights from %s (fine-tuning: optimizer and counters start fresh)", args.ckpt)
    budget = args.time_limit_minutes * 60
    if progress.epoch > args.epochs:
        log.info("nothing to train: the checkpoint is at the end of epoch %d", progress.epoch - 1)
        return 0
    if budget and progress.train_seconds >= budget:
        log.info(
            "the %.1f min time budget is spent (%.1f min trained): raise --time_limit_minutes to go on",
            args.time_limit_minutes,
            progress.train_seconds / 60,
        )
        return 0
    model: nn.Module = raw_model
    if distributed.initialized():  # torchrun, also with one process: the same DDP code path
        device_ids = [ctx.local_rank] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(raw_model, device_ids=device_ids)

    metrics = MetricLogger(
        Path(args.log_file or Path(args.output_dir) / "nvlog.json"),
        Path(args.output_dir),
        subsets=("train", "dev", "dev_ema") if ema else ("train", "dev"),
        enabled=ctx.is_main,
    )
    n_params = sum(p.numel() for p in raw_model.parameters())
    metrics.parameters(
        {
            **_plain_args(args),
            "world_size": world,
            "device": str(device),
            "amp_dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
            "parameters": n_params,
            "steps_per_epoch": steps_per_epoch,
            "train_utterances": len(train_set),
            "dev_utterances": len(val_set),
        }
    )
    log.info(
        "world size %d on %s: %s parameters, %d steps/epoch, global batch %d (%d per process, "
        "%d micro-batch(es) of %d)",
        world,
        device,
        f"{n_params:,}",
        steps_per_epoch,
        args.batch_size * world,
        args.batch_size,
        accum,
        micro_batch,
    )

    def scheduled_lr(elapsed: float) -> float:
        """LR of the next update: by update count and epoch, or by the spent share of the time budget."""
        step, epoch = progress.updates, progress.epoch
        if args.lr_schedule_by == "time":
            step = int(min(1.0, elapsed / budget) * args.epochs * steps_per_epoch)
            epoch = min(args.epochs, step // steps_per_epoch + 1)
        return lr_at(
            step,
            epoch,
            base_lr=args.lr,
            min_lr=args.min_lr,
            steps_per_epoch=steps_per_epoch,
            warmup_epochs=args.warmup_epochs,
            hold_epochs=args.hold_epochs,
            num_epochs=args.epochs,
            policy=args.lr_policy,
            exp_gamma=args.lr_exp_gamma,
        )

    def save(path: Path) -> None:
        """Checkpoint the current position: all ranks gather RNG states, rank 0 writes after a barrier."""
        state = _checkpoint_state(
            raw_model, ema, optimizer, scaler, progress, steps_per_epoch, sampler.global_batch
        )
        state["rng"] = _gather_rng(world)
        state["config"], state["args"] = cfg, _plain_args(args)
        distributed.barrier()
        if ctx.is_main:
            checkpoint.atomic_save(state, path)

    def evaluate_and_log(step: tuple[int, ...], epoch: int) -> None:
        """Dev loss, WER and CER of the model (and of the EMA model); keep the best checkpoint."""
        _broadcast_buffers(raw_model, ema.module if ema else None)  # rank 0's BN statistics everywhere
        results = {"dev": evaluate(raw_model, val_features, val_loader, tokenizer, device, amp_dtype)}
        if ema:
            results["dev_ema"] = evaluate(ema.module, val_features, val_loader, tokenizer, device, amp_dtype)
        for name, r in results.items():
            record = {"loss": r.loss, "wer": 100 * r.wer, "cer": 100 * r.cer, "took": r.seconds}
            metrics.log(
                step, progress.updates, progress.train_seconds, {f"{name}_{k}": v for k, v in record.items()}
            )
        wer = results["dev_ema" if ema else "dev"].wer  # as the reference: the EMA's WER decides with EMA on
        if wer < progress.best_wer and epoch >= args.save_best_from:
            progress.best_wer = wer  # before saving: the file records its own WER
            save(checkpoint.best_path(args.output_dir))
            log.info(
                "best dev WER so far (%.2f%%): saved %s", 100 * wer, checkpoint.best_path(args.output_dir)
            )

    # ------------------------------------------------------------------ training loop
    every = range(args.keep_every, args.epochs + 1, args.keep_every) if args.keep_every > 0 else ()
    milestones = tuple(sorted({*args.keep_milestones, *every}))
    first_epoch, job_updates, job_start = progress.epoch, progress.updates, time.monotonic()
    prior_seconds = elapsed = progress.train_seconds
    stop_reason, stop_signal, last_eval = "", 0, -1
    epoch_history: list[dict[str, float]] = []
    for epoch in range(first_epoch, args.epochs + 1):
        progress.epoch = epoch
        sampler.set_epoch(epoch, skip=progress.steps_done)  # mid-epoch resume: same batches
        train_set.set_epoch(epoch)
        batches = iter(train_loader)
        epoch_totals, log_totals = Totals(), Totals()
        bar = tqdm(
            total=steps_per_epoch,
            initial=progress.steps_done,
            desc=f"epoch {epoch}",
            unit="step",
            disable=not show_progress,
            dynamic_ncols=True,
        )
        while progress.steps_done < steps_per_epoch and not stop_reason:
            lr = scheduled_lr(elapsed)
            set_lr(optimizer, lr)  # before the update: the first update already uses the warmup LR
            step_start = time.perf_counter()
            wait, losses, utts, audio_seconds, bad_files, step_ok = 0.0, [], 0, 0.0, 0, True
            for micro in range(accum):
                fetch_start = time.perf_counter()
                batch: Batch = next(batches)
                wait += time.perf_counter() - fetch_start
                bad_files += batch.skipped
                if skip_bad:  # every file of a batch failed on some rank: all ranks skip the step
                    step_ok = step_ok and distributed.all_true(len(batch) > 0, device)
                if not step_ok:
                    continue
                utts += len(batch)
                audio_seconds += float(batch.audio_lens.sum()) / train_features.sample_rate
                batch = batch.to(device, non_blocking=True)
                # DDP all-reduces gradients in the last micro-batch's backward only.
                last = micro == accum - 1 or model is raw_model
                sync = contextlib.nullcontext() if last else model.no_sync()
                with sync:
                    feats, feat_lens = train_features(batch.audio, batch.audio_lens)
                    with _autocast(device, amp_dtype):
                        log_probs, out_lens = model(feats, feat_lens)
                        nll = ctc_loss(log_probs, out_lens, batch.targets, batch.target_lens, tokenizer.blank)
                        loss = nll.mean()  # the reference's loss: no division by target length
                    losses.append(loss.item())
                    # Decided together: with DDP, either every rank runs backward or none does.
                    step_ok = distributed.all_true(math.isfinite(losses[-1]), device)
                    if step_ok:
                        scaler.scale(loss / accum).backward()
            if step_ok:
                scaler.step(optimizer)
                scaler.update()
                if ema:
                    ema.update(raw_model)
            else:
                progress.skipped_steps += 1
                if ctx.is_main:  # the decision is global: one warning is enough
                    log.warning(
                        "step %d skipped: infinite/NaN loss or empty batch on some rank (%d skipped so far)",
                        progress.updates + 1,
                        progress.skipped_steps,
                    )
            optimizer.zero_grad(set_to_none=True)
            progress.updates += 1
            progress.steps_done += 1
            took = time.perf_counter() - step_start
            step_loss = sum(losses) / len(losses) if step_ok else math.nan
            for totals in (epoch_totals, log_totals):
                totals.add(step_ok, step_loss, utts, audio_seconds, took, wait, bad_files)
            if show_progress:
                bar.set_postfix(
                    loss=f"{step_loss:.3f}", lr=f"{lr:.2e}", utt_s=f"{utts * world / took:.1f}", refresh=False
                )
                bar.update()

            # One small all-reduce a step: every rank stops at the same step, by the same clock.
            signum, elapsed = _max_over_ranks(
                [signals.received, prior_seconds + time.monotonic() - job_start], device
            )
            progress.train_seconds = elapsed
            if signum:
                stop_signal, stop_reason = int(signum), signal.Signals(int(signum)).name
            elif budget and elapsed >= budget:
                stop_reason = f"time limit of {args.time_limit_minutes:g} min"
            elif args.stop_after_steps and progress.updates - job_updates >= args.stop_after_steps:
                stop_reason = f"--stop_after_steps {args.stop_after_steps}"

            if progress.updates % args.log_frequency == 0:
                rates = log_totals.global_rates(device)
                record = {"train_loss": rates["loss"]} if "loss" in rates else {}  # none if all skipped
                record |= {
                    "train_throughput": rates["throughput"],
                    "train_audio_rate": rates["audio_rate"],
                    "train_took": log_totals.seconds / log_totals.steps,
                    "train_wait": log_totals.wait / log_totals.steps,
                    "train_lrate": lr,
                }
                if step_ok:  # the reference's train WER: this rank's last micro-batch
                    hyps = greedy_decode(log_probs.detach().float(), out_lens, tokenizer)
                    record["train_wer"] = 100 * word_errors(hyps, _references(batch, tokenizer)).rate
                if progress.skipped_steps or progress.skipped_files:
                    record["train_skipped_steps"] = progress.skipped_steps
                    record["train_skipped_files"] = progress.skipped_files
                metrics.log(
                    (epoch, progress.steps_done, steps_per_epoch),
                    progress.updates,
                    progress.train_seconds,
                    record,
                )
                log_totals = Totals()
            if progress.updates % args.prediction_frequency == 0 and step_ok and ctx.is_main:
                hyp = greedy_decode(log_probs[:1].detach().float(), out_lens[:1], tokenizer)[0]
                tqdm.write(
                    f"  Decoded:   {hyp[:90]}\n  Reference: {_references(batch, tokenizer)[0][:90]}",
                    file=sys.stdout,
                )
                sys.stdout.flush()
            if progress.updates % args.eval_frequency == 0 and not stop_signal:
                evaluate_and_log((epoch, progress.steps_done, steps_per_epoch), epoch)
                last_eval = progress.updates

        bar.close()
        # ---------------------------------------------------------------- end of the epoch (or of the job)
        rates = epoch_totals.global_rates(device)
        progress.skipped_files += int(rates["files"])
        epoch_record = {
            "train_avg_throughput": rates["throughput"],
            "train_avg_audio_rate": rates["audio_rate"],
            "train_avg_took": epoch_totals.seconds,
            "train_avg_wait_share": 100 * epoch_totals.wait / max(epoch_totals.seconds, 1e-9),
            "train_avg_loss": rates.get("loss", math.nan),
            "train_avg_skipped_steps": progress.skipped_steps,
            "train_avg_skipped_files": progress.skipped_files,
        }
        metrics.log((epoch,), progress.updates, progress.train_seconds, epoch_record)
        epoch_history.append({**rates, "seconds": epoch_totals.seconds})
        epoch_done = progress.steps_done == steps_per_epoch
        if epoch_done:
            progress.epoch, progress.steps_done = epoch + 1, 0
        job_done = (
            bool(stop_reason) or epoch == args.epochs or 0 < args.epochs_this_job <= epoch - first_epoch + 1
        )
        if job_done and not stop_signal and last_eval != progress.updates:
            evaluate_and_log((), epoch)
        if job_done or (epoch_done and (epoch % args.save_frequency == 0 or epoch in milestones)):
            save(checkpoint.epoch_path(args.output_dir, epoch))
            if ctx.is_main:
                checkpoint.prune(args.output_dir, keep_last=2, milestones=milestones)
        if job_done:
            break

    # ------------------------------------------------------------------ finish
    recent = epoch_history[-args.benchmark_epochs_num :]
    seconds = sum(h["seconds"] for h in recent)
    losses = [h["loss"] for h in recent if "loss" in h]
    metrics.log(
        (),
        progress.updates,
        progress.train_seconds,
        {
            "train_avg_throughput": sum(h["throughput"] * h["seconds"] for h in recent) / seconds,
            "train_avg_audio_rate": sum(h["audio_rate"] * h["seconds"] for h in recent) / seconds,
            "train_avg_loss": sum(losses) / len(losses) if losses else math.nan,
            "train_avg_benchmark_epochs_num": len(recent),
        },
    )
    metrics.close()
    if stop_reason:
        log.info("stopped by %s at update %d; --resume continues from here", stop_reason, progress.updates)
    return 128 + stop_signal if stop_signal else 0  # as a shell reports a process killed by the signal


# ---------------------------------------------------------------------- set-up helpers


class _StderrHandler(logging.StreamHandler):
    """Writes to the current `sys.stderr` (pytest and notebooks replace it between runs)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(rank: int) -> None:
    """INFO messages from rank 0, warnings from every rank (prefixed with the rank)."""
    logger = logging.getLogger("jasper")
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    for handler in logger.handlers:
        if isinstance(handler, _StderrHandler):
            prefix = f"[rank {rank}] " if rank else ""
            handler.setFormatter(logging.Formatter(prefix + "%(levelname)s: %(message)s"))


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


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the main process, which ends the step and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _loader(dataset: AudioDataset, sampler: Any, workers: int, seed: int) -> torch.utils.data.DataLoader:
    loader = build_loader(dataset, sampler, workers)
    # Starting an epoch draws worker seeds from this generator, not from the global RNG that dither,
    # SpecAugment and dropout use: a resumed job then draws exactly what an uninterrupted one would.
    loader.generator = torch.Generator().manual_seed(seed)
    loader.worker_init_fn = _ignore_stop_signals
    return loader


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _amp_dtype(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision."""
    if not args.amp:
        if args.amp_dtype:
            log.warning("--amp_dtype %s has no effect without --amp", args.amp_dtype)
        return None
    if device.type == "cuda":
        name = args.amp_dtype or "float16"
        log.info("AMP: %s autocast%s", name, " with a GradScaler" if name == "float16" else "")
    else:
        if args.amp_dtype == "float16":
            log.warning("--amp_dtype float16 is not supported on CPU: using bfloat16")
        name = "bfloat16"
        log.info("AMP on CPU: bfloat16 autocast (faster on CPUs with AVX512-BF16 or AMX, slower elsewhere)")
    return getattr(torch, name)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in `dtype`, or a no-op when `dtype` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _references(batch: Batch, tokenizer: Tokenizer) -> list[str]:
    """The transcripts of a batch, from its padded targets."""
    targets, lens = batch.targets.tolist(), batch.target_lens.tolist()
    return [tokenizer.decode(t[:n]) for t, n in zip(targets, lens, strict=True)]


def _pre_allocate(
    model: nn.Module,
    features: FilterbankFeatures,
    frame_range: list[int],
    batch: int,
    blank: int,
    amp_dtype: torch.dtype | None,
    show_progress: bool = False,
) -> None:
    """Forward+backward at every padded length in `frame_range` (allocator and cuDNN warm-up), then
    put the weights, BatchNorm statistics and RNG states back: training is the same with or without it.
    With cuDNN autotuning each length costs seconds on a GPU, hence the progress bar."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    device = next(model.parameters()).device
    lo, hi = frame_range
    lengths = range(lo, hi + features.pad_align, features.pad_align)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for frames in tqdm(lengths, desc="pre-allocating", unit="length", disable=not show_progress):
            feats = torch.randn(batch, features.n_filt, frames, device=device)
            lens = torch.full((batch,), frames, dtype=torch.int32, device=device)
            target_len = max(1, min(100, frames // 4))
            targets = torch.randint(0, blank, (batch, target_len), device=device)
            with _autocast(device, amp_dtype):
                log_probs, out_lens = model(feats, lens)
                target_lens = torch.full((batch,), target_len, device=device)
                loss = ctc_loss(log_probs, out_lens, targets, target_lens, blank).mean()
            loss.backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    log.info("pre-allocated for %d..%d frames", lo, hi)


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The command line as plain values (what a checkpoint and the log record)."""
    plain = (str, int, float, bool, list, type(None))
    return {k: v for k, v in vars(args).items() if not k.startswith("_") and isinstance(v, plain)}


# ---------------------------------------------------------------------- ranks


def _over_ranks(values: list[float], device: torch.device, op: Any) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def _sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    return _over_ranks(values, device, dist.ReduceOp.SUM)


def _broadcast_buffers(*modules: nn.Module | None) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics), as the checkpoint has them.

    DDP broadcasts them at the start of each forward pass, so after the last training step every rank
    still holds the statistics of its own last batch; the EMA's are averaged per rank. Evaluating
    with those would make the sharded WER differ from rank 0's model.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for module in modules:
        if module is not None:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def _max_over_ranks(values: list[float], device: torch.device) -> list[float]:
    return _over_ranks(values, device, dist.ReduceOp.MAX)


# ---------------------------------------------------------------------- checkpoints


def _checkpoint_state(
    raw_model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    steps_per_epoch: int,
    global_batch: int,
) -> dict[str, Any]:
    """The reference's checkpoint keys plus the exact position (`sampler`) and counters."""
    epoch, steps = progress.epoch, progress.steps_done
    if steps >= steps_per_epoch:
        epoch, steps = epoch + 1, 0
    return {
        "epoch": epoch - 1,  # completed epochs, as the reference
        "step": progress.updates + 1,  # 1-based index of the next update, as the reference
        "best_wer": progress.best_wer,
        "state_dict": raw_model.state_dict(),
        "ema_state_dict": ema.state_dict() if ema else None,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        # Position: global batches (updates) done in `epoch`, each of `global_batch` utterances.
        "sampler": {
            "epoch": epoch,
            "batches_done": steps,
            "global_batch": global_batch,
            "steps_per_epoch": steps_per_epoch,
        },
        "skipped_steps": progress.skipped_steps,
        "skipped_files": progress.skipped_files,
        "train_seconds": progress.train_seconds,
    }


def _find_resume_checkpoint(output_dir: str, rank: int) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable epoch checkpoint, chosen by rank 0 so that every rank loads the same file."""
    found = checkpoint.latest_loadable(output_dir) if rank == 0 else None
    choice = [str(found[0]) if found else None]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(choice, src=0)
    if choice[0] is None:
        log.info("--resume: no checkpoint in %s, starting from scratch", output_dir)
        return None
    if found is None:
        found = Path(choice[0]), checkpoint.read(choice[0])
    return found


def _restore_progress(ckpt: dict[str, Any], steps_per_epoch: int, global_batch: int) -> Progress:
    """The position after `ckpt`; a reference checkpoint (no `sampler`) is at the end of its epoch."""
    progress = Progress(
        best_wer=float(ckpt.get("best_wer", NO_BEST)),
        skipped_steps=int(ckpt.get("skipped_steps", 0)),
        skipped_files=int(ckpt.get("skipped_files", 0)),
        train_seconds=float(ckpt.get("train_seconds", 0.0)),
    )
    position = ckpt.get("sampler")
    if not position:
        progress.epoch = int(ckpt.get("epoch", 0)) + 1
        progress.updates = (progress.epoch - 1) * steps_per_epoch
        return progress
    batches = int(position["batches_done"])
    if batches and position.get("global_batch") != global_batch:
        # Another world size or batch size: continue after about as many utterances.
        new = batches * int(position.get("global_batch") or global_batch) // global_batch
        log.warning(
            "the checkpoint's batches held %s utterances, now %d: continuing its epoch after %d batches "
            "instead of %d (the batch order differs from the original run's)",
            position.get("global_batch"),
            global_batch,
            new,
            batches,
        )
        batches = new
    progress.epoch = int(position["epoch"])
    progress.steps_done = batches
    progress.updates = int(ckpt["step"]) - 1
    if progress.steps_done >= steps_per_epoch:
        progress.epoch, progress.steps_done = progress.epoch + 1, 0
    return progress


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else None,
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def _gather_rng(world: int) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (each rank draws its own dither, masks and dropout)."""
    if world == 1:
        return [_rng_state()]
    states: list[Any] = [None] * world
    dist.all_gather_object(states, _rng_state())
    return states


def _restore_rng(states: list[dict[str, Any]] | None, world: int, rank: int, fallback_seed: int) -> None:
    if not states or len(states) != world:
        if states:
            log.warning("the checkpoint has RNG states of %d ranks, not %d: reseeding", len(states), world)
        _seed_everything(fallback_seed)
        return
    state = states[rank]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])


# ---------------------------------------------------------------------- logging

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
    "benchmark_epochs_num": ("epochs", "", ""),
}
SUBSETS = ("train_avg", "dev_ema", "train", "dev")  # longest prefix first


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
        self.file.write("DLLL " + json.dumps({**head, **record}, default=_json_value) + "\n")
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
        clean = {k: _json_value(v) for k, v in data.items()}
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


def _json_value(value: Any) -> Any:
    """JSON has no inf/NaN: write them as null. Tensors and paths become numbers and strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value
