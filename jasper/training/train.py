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
--num_workers; with --num_workers 0 it is the in-process loading itself). Every JSON record
carries `train_seconds`, the training time of all jobs so far (the clock of the time budget, the
time-based LR schedule and the checkpoints).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from jasper import checkpoint, config, distributed, graphs
from jasper import device as device_setup
from jasper.data import (
    AudioDataset,
    Batch,
    BucketingBatchSampler,
    ManifestError,
)
from jasper.decoding import greedy_decode
from jasper.features import FilterbankFeatures
from jasper.metrics import word_errors
from jasper.model import Jasper
from jasper.text import Tokenizer
from jasper.training import inputs
from jasper.training import options as train_options
from jasper.training import state as train_state
from jasper.training.evaluation import evaluate
from jasper.training.finetune import Freezer, initial_weights
from jasper.training.loss import ctc_loss, pre_allocate
from jasper.training.metric_log import MetricLogger, Totals
from jasper.training.optim import EMA, build_optimizer, lr_at, set_lr
from jasper.training.state import Progress
from jasper.training.stopping import StopSignals

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The reference train.py's flags and jasper's additions (`jasper.training.options`)."""
    train_options.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    problem = train_options.check(args)
    if problem:
        print(f"jasper train: error: {problem}", file=sys.stderr)
        return 2
    ctx = distributed.init(args.device)
    distributed.setup_logging(ctx.rank)
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


# ---------------------------------------------------------------------- the loop


def train(args: argparse.Namespace, ctx: distributed.Context, signals: StopSignals) -> int:
    """Build, resume, then epochs of steps with evaluations and checkpoints, until the job ends."""
    run = build(args, ctx)
    if run is None:
        return 2
    resume(run)
    if nothing_left(run):
        return 0
    start(run)
    job = Job.starting(run)
    for epoch in range(job.first_epoch, args.epochs + 1):
        totals = train_epoch(run, job, epoch, signals)
        if end_epoch(run, job, epoch, totals):
            break
    return finish(run, job)


@dataclass
class Run:
    """Everything a training job builds before its first update, and where training stands."""

    args: argparse.Namespace
    ctx: distributed.Context
    cfg: dict[str, Any]
    tokenizer: Tokenizer
    train_set: AudioDataset
    val_set: AudioDataset
    sampler: BucketingBatchSampler
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    raw_model: Jasper
    train_features: FilterbankFeatures
    val_features: FilterbankFeatures
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None
    amp_dtype: torch.dtype | None
    show_progress: bool
    steps_per_epoch: int  # of a whole epoch (the sampler's length shrinks on a mid-epoch resume)
    progress: Progress = field(default_factory=Progress)
    model: nn.Module | None = None  # raw_model, or its DDP wrapper once `start` has run
    compiled: graphs.Compiled | None = None  # with --compile: `model` through torch.compile, bucketed
    metrics: MetricLogger | None = None
    lineage: list[dict] = field(default_factory=list)  # the models this one was fine-tuned from
    freezer: Freezer | None = None

    @property
    def budget(self) -> float:
        """The time budget in seconds (0: none), counted over all jobs."""
        return self.args.time_limit_minutes * 60


@dataclass
class Job:
    """This job's own bookkeeping: where it began, its clock, why it stops, what its epochs measured."""

    first_epoch: int
    first_update: int
    started: float  # time.monotonic() at the first update
    prior_seconds: float  # training time of the jobs before this one
    elapsed: float  # training time of all jobs so far
    milestones: tuple[int, ...]  # epochs whose checkpoints are kept
    stop_reason: str = ""
    stop_signal: int = 0
    last_eval: int = -1
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def starting(cls, run: Run) -> Job:
        args, progress = run.args, run.progress
        every = range(args.keep_every, args.epochs + 1, args.keep_every) if args.keep_every > 0 else ()
        milestones = tuple(sorted({*args.keep_milestones, *every}))
        seconds = progress.train_seconds
        return cls(progress.epoch, progress.updates, time.monotonic(), seconds, seconds, milestones)


@dataclass
class Step:
    """What one update did, for the totals, the log record and the printed prediction."""

    ok: bool
    loss: float
    lr: float
    utts: int
    audio_seconds: float
    seconds: float
    wait: float
    bad_files: int
    batch: Batch | None = None  # the last micro-batch, its log-probs and output lengths
    log_probs: torch.Tensor | None = None
    out_lens: torch.Tensor | None = None


# ---------------------------------------------------------------------- build, resume, start


def build(args: argparse.Namespace, ctx: distributed.Context) -> Run | None:
    """Config, data, model, features, optimizer; None when the data is smaller than one global batch."""
    device = ctx.device
    device_setup.configure(args, device)
    cfg = config.load(args.model_config, args.override_config)
    tokenizer = Tokenizer(cfg["labels"])
    data = inputs.build(args, ctx, cfg, tokenizer)
    if data is None:
        return None
    train_state.seed_everything(args.seed)  # the same initial weights on every rank (and for any world size)
    raw_model = Jasper.from_config(cfg).to(device)
    train_state.seed_everything(args.seed + ctx.rank)  # then each rank its own dither, masks and dropout
    train_features = FilterbankFeatures(**config.section(cfg, "input_train", "filterbank_features"))
    val_features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features"))
    train_features.to(device).train()  # SpecAugment and dither; val: eval mode, deterministic
    val_features.to(device).eval()
    optimizer = build_optimizer(
        args.optimizer, raw_model.parameters(), lr=args.lr, weight_decay=args.weight_decay
    )
    amp_dtype = device_setup.amp_dtype(args, device)
    auto_progress = args.progress == "auto" and sys.stderr.isatty()
    show_progress = ctx.is_main and (args.progress == "on" or auto_progress)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if args.pre_allocate_range:
        micro_batch = args.batch_size // args.grad_accumulation_steps
        pre_allocate(
            raw_model,
            train_features,
            args.pre_allocate_range,
            micro_batch,
            tokenizer.blank,
            amp_dtype,
            show_progress,
        )
    ema = EMA(raw_model, args.ema) if args.ema > 0 else None
    return Run(
        args,
        ctx,
        cfg,
        tokenizer,
        *data,
        raw_model,
        train_features,
        val_features,
        optimizer,
        scaler,
        ema,
        amp_dtype,
        show_progress,
        steps_per_epoch=len(data[2]) // args.grad_accumulation_steps,
    )


def resume(run: Run) -> None:
    """With --resume, continue from the newest readable checkpoint; else --ckpt's weights, if given."""
    args, raw_model, ema = run.args, run.raw_model, run.ema
    found = train_state.find_resume_checkpoint(args.output_dir, run.ctx.rank) if args.resume else None
    if found:
        path, ckpt = found
        checkpoint.load_state_dict(raw_model, ckpt["state_dict"], source=f"{path} [state_dict]")
        if ema:
            if not ckpt.get("ema_state_dict"):
                log.warning("%s has no EMA weights: the EMA restarts from the model's weights", path)
            ema_weights = ckpt.get("ema_state_dict") or ckpt["state_dict"]
            checkpoint.load_state_dict(ema.module, ema_weights, source=f"{path} [ema_state_dict]")
        try:
            run.optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, ValueError) as e:
            raise checkpoint.CheckpointError(
                f"{path}: its optimizer state does not fit --optimizer {args.optimizer} ({e})"
            ) from None
        if ckpt.get("scaler") and run.scaler.is_enabled():
            run.scaler.load_state_dict(ckpt["scaler"])
        progress = run.progress = train_state.restore_progress(
            ckpt, run.steps_per_epoch, run.sampler.global_batch
        )
        world, rank = run.ctx.world_size, run.ctx.rank
        train_state.restore_rng(
            ckpt.get("rng"), world, rank, fallback_seed=args.seed + rank + progress.updates
        )
        log.info(
            "resumed from %s: epoch %d with %d/%d steps done, %d updates, %.1f min trained",
            path,
            progress.epoch,
            progress.steps_done,
            run.steps_per_epoch,
            progress.updates,
            progress.train_seconds / 60,
        )
        run.lineage = ckpt.get("lineage", [])
    elif args.ckpt:
        run.lineage = initial_weights(raw_model, ema.module if ema else None, args.ckpt, run.cfg["labels"])
    run.freezer = Freezer(raw_model, args.freeze, args.unfreeze_after_steps, args.freeze_bn)


def nothing_left(run: Run) -> bool:
    """True (with a message) when the resumed position is past the last epoch or the time budget."""
    progress = run.progress
    if progress.epoch > run.args.epochs:
        log.info("nothing to train: the checkpoint is at the end of epoch %d", progress.epoch - 1)
        return True
    if run.budget and progress.train_seconds >= run.budget:
        log.info(
            "the %.1f min time budget is spent (%.1f min trained): raise --time_limit_minutes to go on",
            run.args.time_limit_minutes,
            progress.train_seconds / 60,
        )
        return True
    return False


def start(run: Run) -> None:
    """Wrap the model in DDP under torchrun (also with one process), open the log, record the run."""
    args, ctx, raw_model = run.args, run.ctx, run.raw_model
    assert run.freezer is not None
    run.freezer.apply(run.progress.updates)
    _wrap(run)
    run.metrics = MetricLogger(
        Path(args.log_file or Path(args.output_dir) / "nvlog.json"),
        Path(args.output_dir),
        subsets=("train", "dev", "dev_ema") if run.ema else ("train", "dev"),
        enabled=ctx.is_main,
    )
    n_params = sum(p.numel() for p in raw_model.parameters())
    amp = str(run.amp_dtype).removeprefix("torch.") if run.amp_dtype else None
    run.metrics.parameters(
        {
            **train_options.plain_args(args),
            "world_size": ctx.world_size,
            "device": str(ctx.device),
            "amp_dtype": amp,
            "parameters": n_params,
            "steps_per_epoch": run.steps_per_epoch,
            "train_utterances": len(run.train_set),
            "dev_utterances": len(run.val_set),
        }
    )
    accum = args.grad_accumulation_steps
    log.info(
        "world size %d on %s: %s parameters, %d steps/epoch, global batch %d (%d per process, "
        "%d micro-batch(es) of %d)",
        ctx.world_size,
        ctx.device,
        f"{n_params:,}",
        run.steps_per_epoch,
        args.batch_size * ctx.world_size,
        args.batch_size,
        accum,
        args.batch_size // accum,
    )


# ---------------------------------------------------------------------- epochs and steps


def train_epoch(run: Run, job: Job, epoch: int, signals: StopSignals) -> Totals:
    """Steps of `epoch` from where it stands until its end or a stop; this epoch's totals."""
    args, progress = run.args, run.progress
    progress.epoch = epoch
    run.sampler.set_epoch(epoch, skip=progress.steps_done)  # mid-epoch resume: same batches
    run.train_set.set_epoch(epoch)
    batches = iter(run.train_loader)
    epoch_totals, log_totals = Totals(), Totals()
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=progress.steps_done,
        desc=f"epoch {epoch}",
        unit="step",
        disable=not run.show_progress,
        dynamic_ncols=True,
    )
    while progress.steps_done < run.steps_per_epoch and not job.stop_reason:
        step = train_step(run, batches, scheduled_lr(run, job.elapsed))
        for totals in (epoch_totals, log_totals):
            totals.add(step)
        if run.show_progress:
            utt_s = step.utts * run.ctx.world_size / step.seconds
            bar.set_postfix(loss=f"{step.loss:.3f}", lr=f"{step.lr:.2e}", utt_s=f"{utt_s:.1f}", refresh=False)
            bar.update()
        check_stop(run, job, signals)
        if progress.updates % args.log_frequency == 0:
            log_step(run, step, log_totals, epoch)
            log_totals = Totals()
        if progress.updates % args.prediction_frequency == 0 and step.ok and run.ctx.is_main:
            print_prediction(run, step)
        if progress.updates % args.eval_frequency == 0 and not job.stop_signal:
            evaluate_and_log(run, (epoch, progress.steps_done, run.steps_per_epoch), epoch)
            job.last_eval = progress.updates
        del step  # its batch and log-probs (a skipped step's graph) must not live through the next step
    bar.close()
    return epoch_totals


def scheduled_lr(run: Run, elapsed: float) -> float:
    """LR of the next update: by update count and epoch, or by the spent share of the time budget."""
    args, steps_per_epoch = run.args, run.steps_per_epoch
    step, epoch = run.progress.updates, run.progress.epoch
    if args.lr_schedule_by == "time":
        step = int(min(1.0, elapsed / run.budget) * args.epochs * steps_per_epoch)
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


def _wrap(run: Run) -> None:
    """The model steps run: raw_model, or under torchrun (also with one process) its DDP wrapper,
    built again when the encoder is frozen or unfrozen: DDP syncs what needed gradients when built."""
    run.model = run.raw_model
    if distributed.initialized():
        device_ids = [run.ctx.local_rank] if run.ctx.device.type == "cuda" else None
        run.model = nn.parallel.DistributedDataParallel(run.raw_model, device_ids=device_ids)
    if run.args.compile:  # again after a re-wrap: the compiled graph holds the old wrapper
        run.compiled = graphs.Compiled(run.model, previous=run.compiled)


def train_step(run: Run, batches: Any, lr: float) -> Step:
    """One update at `lr`: its micro-batches forward and backward, then the optimizer (or a skip).

    A step is skipped by every rank together when any rank's loss is infinite or NaN, or when all of
    a micro-batch's files failed on some rank (each failed file is a warning and a count).
    """
    if run.freezer is not None and run.freezer.apply(run.progress.updates):
        _wrap(run)
    args, device, model, raw_model = run.args, run.ctx.device, run.model, run.raw_model
    assert model is not None, "start(run) wraps the model before the first step"
    accum, blank = args.grad_accumulation_steps, run.tokenizer.blank
    set_lr(run.optimizer, lr)  # before the update: the first update already uses the warmup LR
    started = time.perf_counter()
    step = Step(ok=True, loss=math.nan, lr=lr, utts=0, audio_seconds=0.0, seconds=0.0, wait=0.0, bad_files=0)
    losses = []
    for micro in range(accum):
        fetch_start = time.perf_counter()
        batch: Batch = next(batches)
        step.wait += time.perf_counter() - fetch_start
        step.bad_files += batch.skipped
        for failure in batch.failures:
            log.warning("skipping unreadable utterance: %s", failure.error)
        if not args.strict:  # every file of a batch failed on some rank: all ranks skip the step
            step.ok = step.ok and distributed.all_true(len(batch) > 0, device)
        if not step.ok:
            continue
        step.utts += len(batch)
        step.audio_seconds += float(batch.audio_lens.sum()) / run.train_features.sample_rate
        batch = step.batch = batch.to(device, non_blocking=True)
        # DDP all-reduces gradients in the last micro-batch's backward only.
        last = micro == accum - 1 or model is raw_model
        with contextlib.nullcontext() if last else model.no_sync():
            feats, feat_lens = run.train_features(batch.audio, batch.audio_lens)
            with device_setup.autocast(device, run.amp_dtype):
                step.log_probs, step.out_lens = (run.compiled or model)(feats, feat_lens)
                nll = ctc_loss(step.log_probs, step.out_lens, batch.targets, batch.target_lens, blank)
                loss = nll.mean()  # the reference's loss: no division by target length
            losses.append(loss.item())
            # Decided together: with DDP, either every rank runs backward or none does.
            step.ok = distributed.all_true(math.isfinite(losses[-1]), device)
            if step.ok:
                run.scaler.scale(loss / accum).backward()
    _apply_or_skip(run, step.ok)
    step.seconds = time.perf_counter() - started
    step.loss = sum(losses) / len(losses) if step.ok else math.nan
    return step


def _apply_or_skip(run: Run, ok: bool) -> None:
    """The optimizer (and EMA) update of a good step, or the count and warning of a skipped one."""
    progress = run.progress
    if ok:
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.ema:
            run.ema.update(run.raw_model)
    else:
        progress.skipped_steps += 1
        if run.ctx.is_main:  # the decision is global: one warning is enough
            log.warning(
                "step %d skipped: infinite/NaN loss or empty batch on some rank (%d skipped so far)",
                progress.updates + 1,
                progress.skipped_steps,
            )
    run.optimizer.zero_grad(set_to_none=True)
    progress.updates += 1
    progress.steps_done += 1


def check_stop(run: Run, job: Job, signals: StopSignals) -> None:
    """One small all-reduce a step: every rank stops at the same step, by the same clock."""
    args, progress = run.args, run.progress
    signum, job.elapsed = distributed.max_over_ranks(
        [signals.received, job.prior_seconds + time.monotonic() - job.started], run.ctx.device
    )
    progress.train_seconds = job.elapsed
    if signum:
        job.stop_signal, job.stop_reason = int(signum), signal.Signals(int(signum)).name
    elif run.budget and job.elapsed >= run.budget:
        job.stop_reason = f"time limit of {args.time_limit_minutes:g} min"
    elif args.stop_after_steps and progress.updates - job.first_update >= args.stop_after_steps:
        job.stop_reason = f"--stop_after_steps {args.stop_after_steps}"


def log_step(run: Run, step: Step, totals: Totals, epoch: int) -> None:
    """The training record of the last --log_frequency updates."""
    progress, metrics = run.progress, run.metrics
    assert metrics is not None
    rates = totals.global_rates(run.ctx.device)
    record = {"train_loss": rates["loss"]} if "loss" in rates else {}  # none if all skipped
    record |= {
        "train_throughput": rates["throughput"],
        "train_audio_rate": rates["audio_rate"],
        "train_took": totals.seconds / totals.steps,
        "train_wait": totals.wait / totals.steps,
        "train_lrate": step.lr,
    }
    if step.ok and step.batch is not None:  # the reference's train WER: this rank's last micro-batch
        hyps = greedy_decode(step.log_probs.detach().float(), step.out_lens, run.tokenizer)
        record["train_wer"] = 100 * word_errors(hyps, _references(step.batch, run.tokenizer)).rate
    if run.compiled:  # shapes compiled so far: a number that keeps growing means recompiles
        record["train_compiles"] = run.compiled.compiles
        record["train_compile_seconds"] = run.compiled.compile_seconds
    if progress.skipped_steps or progress.skipped_files:
        record["train_skipped_steps"] = progress.skipped_steps
        record["train_skipped_files"] = progress.skipped_files
    steps = (epoch, progress.steps_done, run.steps_per_epoch)
    metrics.log(steps, progress.updates, progress.train_seconds, record)


def print_prediction(run: Run, step: Step) -> None:
    """The first utterance of the last micro-batch, decoded, above its reference."""
    assert step.batch is not None and step.log_probs is not None and step.out_lens is not None
    hyp = greedy_decode(step.log_probs[:1].detach().float(), step.out_lens[:1], run.tokenizer)[0]
    reference = _references(step.batch, run.tokenizer)[0]
    tqdm.write(f"  Decoded:   {hyp[:90]}\n  Reference: {reference[:90]}", file=sys.stdout)
    sys.stdout.flush()


# ---------------------------------------------------------------------- evaluate, save, finish


def evaluate_and_log(run: Run, step: tuple[int, ...], epoch: int) -> None:
    """Dev loss, WER and CER of the model (and of the EMA model); keep the best checkpoint."""
    raw_model, ema, progress, metrics = run.raw_model, run.ema, run.progress, run.metrics
    assert metrics is not None
    distributed.broadcast_buffers(raw_model, ema.module if ema else None)  # rank 0's BN statistics
    where = (run.val_features, run.val_loader, run.tokenizer, run.ctx.device, run.amp_dtype)
    results = {"dev": evaluate(raw_model, *where)}
    if ema:
        results["dev_ema"] = evaluate(ema.module, *where)
    for name, r in results.items():
        record = {"loss": r.loss, "wer": 100 * r.wer, "cer": 100 * r.cer, "took": r.seconds}
        record = {f"{name}_{k}": v for k, v in record.items()}
        metrics.log(step, progress.updates, progress.train_seconds, record)
    wer = results["dev_ema" if ema else "dev"].wer  # as the reference: the EMA's WER decides with EMA on
    if wer < progress.best_wer and epoch >= run.args.save_best_from:
        progress.best_wer = wer  # before saving: the file records its own WER
        best = checkpoint.best_path(run.args.output_dir)
        save(run, best)
        log.info("best dev WER so far (%.2f%%): saved %s", 100 * wer, best)


def save(run: Run, path: Path) -> None:
    """Checkpoint the current position: all ranks gather RNG states, rank 0 writes after a barrier."""
    state = train_state.checkpoint_state(
        run.raw_model,
        run.ema,
        run.optimizer,
        run.scaler,
        run.progress,
        run.steps_per_epoch,
        run.sampler.global_batch,
    )
    state["rng"] = train_state.gather_rng(run.ctx.world_size)
    state["config"], state["args"] = run.cfg, train_options.plain_args(run.args)
    state["lineage"] = run.lineage
    distributed.barrier()
    if run.ctx.is_main:
        checkpoint.atomic_save(state, path)


def end_epoch(run: Run, job: Job, epoch: int, totals: Totals) -> bool:
    """Log the epoch, evaluate and checkpoint when due; True when the job ends here."""
    args, progress, metrics = run.args, run.progress, run.metrics
    assert metrics is not None
    rates = totals.global_rates(run.ctx.device)
    progress.skipped_files += int(rates["files"])
    epoch_record = {
        "train_avg_throughput": rates["throughput"],
        "train_avg_audio_rate": rates["audio_rate"],
        "train_avg_took": totals.seconds,
        "train_avg_wait_share": 100 * totals.wait / max(totals.seconds, 1e-9),
        "train_avg_loss": rates.get("loss", math.nan),
        "train_avg_skipped_steps": progress.skipped_steps,
        "train_avg_skipped_files": progress.skipped_files,
    }
    if run.ctx.distributed:
        fewest, most = distributed.range_over_ranks("skipped steps", progress.skipped_steps, run.ctx.device)
        epoch_record |= {"train_avg_skipped_steps_rank_min": fewest, "train_avg_skipped_steps_rank_max": most}
    metrics.log((epoch,), progress.updates, progress.train_seconds, epoch_record)
    job.history.append({**rates, "seconds": totals.seconds})
    epoch_done = progress.steps_done == run.steps_per_epoch
    if epoch_done:
        progress.epoch, progress.steps_done = epoch + 1, 0
    job_done = (
        bool(job.stop_reason)
        or epoch == args.epochs
        or 0 < args.epochs_this_job <= epoch - job.first_epoch + 1
    )
    if job_done and not job.stop_signal and job.last_eval != progress.updates:
        evaluate_and_log(run, (), epoch)
    if job_done or (epoch_done and (epoch % args.save_frequency == 0 or epoch in job.milestones)):
        save(run, checkpoint.epoch_path(args.output_dir, epoch))
        if run.ctx.is_main:
            checkpoint.prune(args.output_dir, keep_last=2, milestones=job.milestones)
    return job_done


def finish(run: Run, job: Job) -> int:
    """The run's summary record; the exit code (128 + the signal after a signal, as a shell says)."""
    progress, metrics = run.progress, run.metrics
    assert metrics is not None
    recent = job.history[-run.args.benchmark_epochs_num :]
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
    if job.stop_reason:
        log.info(
            "stopped by %s at update %d; --resume continues from here", job.stop_reason, progress.updates
        )
    return 128 + job.stop_signal if job.stop_signal else 0


# ---------------------------------------------------------------------- set-up helpers


def _references(batch: Batch, tokenizer: Tokenizer) -> list[str]:
    """The transcripts of a batch, from its padded targets."""
    targets, lens = batch.targets.tolist(), batch.target_lens.tolist()
    return [tokenizer.decode(t[:n]) for t, n in zip(targets, lens, strict=True)]
