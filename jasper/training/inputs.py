"""Training inputs: the manifests checked, the datasets, the bucketing sampler and the loaders.

Before anything is loaded, the manifest pass of `jasper data check` (`jasper.datasets.check`) runs
on the train and dev manifests: the findings that need no audio decoding (transcripts, alphabet,
durations, CTC lengths, duplicates) are logged as warnings before the first step, or, with
`--strict`, stop the job with the same table `jasper data check` prints.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

import torch

from jasper import config, distributed
from jasper.data import (
    AudioDataset,
    BucketingBatchSampler,
    ManifestError,
    ShardedEvalSampler,
    build_loader,
    load_utterances,
)
from jasper.datasets import check
from jasper.text import Tokenizer
from jasper.training.stopping import ignore_stop_signals

log = logging.getLogger(__name__)


def check_manifests(args: argparse.Namespace, cfg: dict[str, Any]) -> check.Report:
    """The manifest checks of train and dev (each with its own split's limits), logged; with
    --strict, a finding that would break training or lose data is a ManifestError."""
    started = time.perf_counter()
    train_spec = check.ModelSpec.from_config(cfg)
    val_spec = check.ModelSpec.from_config({k: v for k, v in cfg.items() if k != "input_train"})
    report = check.check_manifests(args.train_manifests, args.dataset_dir, train_spec)
    check.check_manifests(args.val_manifests, args.dataset_dir, val_spec, report)
    seconds = time.perf_counter() - started
    if not report.findings:
        log.info("manifest check: no findings (%.1f s)", seconds)
        return report
    log.warning("manifest check (%.1f s): %s", seconds, check.summary_line(report))
    for line in check.table(report, train_spec).splitlines():
        log.warning("  %s", line)
    if args.strict and report.blocking:
        raise ManifestError(
            f"--strict: the manifests have {len(report.blocking)} finding(s) that would break training "
            f"or lose data, first: {report.blocking[0].where}: {report.blocking[0].kind}: "
            f"{report.blocking[0].detail} (jasper data check lists them all)"
        )
    return report


def build(
    args: argparse.Namespace, ctx: distributed.Context, cfg: dict[str, Any], tokenizer: Tokenizer
) -> tuple[AudioDataset, AudioDataset, BucketingBatchSampler, Any, Any] | None:
    """(train set, dev set, train sampler, train loader, dev loader), or None when too small."""
    world, rank, accum = ctx.world_size, ctx.rank, args.grad_accumulation_steps
    train_data_cfg = config.section(cfg, "input_train", "audio_dataset")
    val_data_cfg = config.section(cfg, "input_val", "audio_dataset")
    skip_bad = not args.strict
    check_manifests(args, cfg)  # on every rank: with --strict, all of them stop together
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
    preload(args, ctx, train_set, val_set)
    if args.num_workers == 0:  # the batch is read while training waits: on its threads
        train_set.threads = val_set.threads = torch.get_num_threads()
    # The same seed on every rank: ranks agree on each epoch's global batches and take their slices.
    sampler = BucketingBatchSampler(
        train_set.durations(),
        args.batch_size // accum,
        num_replicas=world,
        rank=rank,
        seed=args.seed,
        accumulation=accum,
    )
    if len(sampler) // accum == 0:
        log.error(
            "%d training utterances are fewer than one global batch (%d per process x %d processes)",
            len(train_set),
            args.batch_size,
            world,
        )
        return None
    train_loader = _loader(train_set, sampler, args.num_workers, args.seed)
    val_sampler = ShardedEvalSampler(val_set.durations(), args.batch_size, world, rank)
    val_loader = _loader(val_set, val_sampler, args.num_workers, args.seed)
    return train_set, val_set, sampler, train_loader, val_loader


def preload(args: argparse.Namespace, ctx: distributed.Context, *datasets: AudioDataset) -> None:
    """The audio cache (`AudioDataset.preload`) of each set, when all of them fit --audio_cache_gb."""
    if args.audio_cache_gb <= 0:
        return
    needed = sum(d.cache_bytes() for d in datasets)
    if needed > args.audio_cache_gb * 1e9:
        log.info(
            "audio cache off: the audio needs %.1f GB as float32, more than --audio_cache_gb %g",
            needed / 1e9,
            args.audio_cache_gb,
        )
        return
    show = ctx.is_main and args.progress != "off" and (args.progress == "on" or sys.stderr.isatty())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    seconds = sum(d.preload(cores, show) for d in datasets)  # before the first step: every core
    cached = sum(len(d.cache) for d in datasets)
    log.info("audio cache: %d recordings, %.2f GB, decoded in %.1f s", cached, needed / 1e9, seconds)


def _loader(dataset: AudioDataset, sampler: Any, workers: int, seed: int) -> torch.utils.data.DataLoader:
    loader = build_loader(dataset, sampler, workers)
    # Starting an epoch draws worker seeds from this generator, not from the global RNG that dither,
    # SpecAugment and dropout use: a resumed job then draws exactly what an uninterrupted one would.
    loader.generator = torch.Generator().manual_seed(seed)
    loader.worker_init_fn = ignore_stop_signals
    return loader
