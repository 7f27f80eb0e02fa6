"""The training loop's overhead: `jasper train` against a bare step on the same batches, one run.

The bare step is the floor the loop is measured against: the batches `jasper train` will read
(the same sampler, seed and augmentation draws) are loaded into memory first, then each step
computes features (dither, VTLP), runs the model under the same autocast, the CTC loss, backward and
the optimizer; nothing else. The loop is the real `jasper train` with the quickstart's settings
(2 threads, AdamW, batch 16, bf16 autocast where the CPU has it, no evaluation), timed by its own
clock (`train_seconds`: everything between steps counts) over the same steps, the first `--warmup`
of each left out.

    python benchmarks/train_loop.py --data_dir data/quickstart/synth [--steps 60] [--warmup 10]
        [--rounds 3] [--loops "--num_workers 0" "--num_workers 1 --audio_cache_gb 0"]

`--parts` instead times what the loop adds, apart: the loader's work per batch (decoding, trimming,
speed perturbation, collating; one batch read on 1 and on 2 threads), and the bare step with its
time axis padded to `jasper.graphs.bucket` lengths beside the plain one.

Each `--loops` entry is a `jasper train` run with those flags added to the quickstart's (the
default: the quickstart's loop as it is, and as it was before the audio cache and in-process
loading). A round times the bare step and then each loop, and the table gives medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from jasper import audio as audio_io
from jasper import config, graphs
from jasper import device as device_setup
from jasper.data import AudioDataset, BucketingBatchSampler, collate, load_utterances
from jasper.features import FilterbankFeatures
from jasper.model import Jasper
from jasper.text import Tokenizer
from jasper.training.loss import ctc_loss
from jasper.training.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
LOG_EVERY = 10  # the loop's log records every 10 steps (the quickstart: 25); warmup and steps are multiples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data_dir", required=True, help="the quickstart's corpus (synth-train.json, synth-dev.json)"
    )
    parser.add_argument("--model_config", default=str(REPO / "configs" / "jasper5x3_cpu.yaml"))
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each side")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amp", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--loops",
        nargs="+",
        default=["--num_workers 0", "--num_workers 1 --audio_cache_gb 0"],
        help="`jasper train` variants: flags added to the quickstart's, one string each",
    )
    parser.add_argument("--parts", action="store_true", help="time the loader's parts and bucket padding")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.steps % LOG_EVERY or args.warmup % LOG_EVERY or not args.warmup:
        parser.error(f"--steps and --warmup must be multiples of {LOG_EVERY}, --warmup at least {LOG_EVERY}")
    amp = args.amp == "on" or (args.amp == "auto" and device_setup.has_native_bf16())
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    batches = load_batches(args, data_dir)
    audio_seconds = [float(b.audio_lens.sum()) / 16000 for b in batches]
    if args.parts:
        loader_parts(args, data_dir)
        for pad in (False, True, False, True):
            rate = bare_step_rate(args, batches, audio_seconds, amp, pad)
            print(f"bare step{', padded to length buckets' if pad else ''}: {rate:.1f} audio-s/s", flush=True)
        return
    bare: list[float] = []
    loops: dict[str, list[float]] = {flags: [] for flags in args.loops}
    for r in range(args.rounds):
        bare.append(bare_step_rate(args, batches, audio_seconds, amp))
        print(f"round {r + 1}: bare step {bare[-1]:.1f} audio-s/s", flush=True)
        for flags, rates in loops.items():
            rates.append(loop_rate(args, data_dir, amp, flags))
            print(f"round {r + 1}: jasper train {flags}: {rates[-1]:.1f} audio-s/s", flush=True)
    b = statistics.median(bare)
    lines = [
        f"{Path(args.model_config).name}, batch {args.batch_size}, {args.threads} threads, "
        f"amp {'bf16' if amp else 'off'}, {args.steps} steps after {args.warmup}, {args.rounds} rounds",
        "",
        "| side | audio-s/s (median) | of the bare step | rounds |",
        "|---|---:|---:|---|",
        f"| bare step (features in the step, the loop's shapes) | {b:.1f} | 100% | {_join(bare)} |",
    ]
    for flags, rates in loops.items():
        m = statistics.median(rates)
        lines.append(f"| `jasper train` {flags} | {m:.1f} | {100 * m / b:.1f}% | {_join(rates)} |")
    print("\n" + "\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"bare": bare, "loops": loops}, indent=2) + "\n")


def _join(rates: list[float]) -> str:
    return ", ".join(f"{x:.1f}" for x in rates)


def load_batches(args: argparse.Namespace, data_dir: Path) -> list:
    """The loop's first warmup + steps batches of epoch 1: same sampler, seed and augmentation draws."""
    dataset, sampler = training_data(args, data_dir)
    batches = []
    for indices in sampler:
        batches.append(collate([dataset[i] for i in indices]))
        if len(batches) == args.warmup + args.steps:
            break
    return batches


def loader_parts(args: argparse.Namespace, data_dir: Path) -> None:
    """Milliseconds per batch of each part of the loader's work, on one thread, over the timed batches."""
    dataset, sampler = training_data(args, data_dir)
    parts = dict.fromkeys(("decode", "trim", "perturb", "collate"), 0.0)
    timed = list(sampler)[args.warmup : args.warmup + args.steps]
    for indices in timed:
        items = []
        for i in indices:
            utt, rng = dataset.utterances[i], np.random.default_rng((args.seed, 1, i))
            t0 = time.perf_counter()
            samples = audio_io.load(utt.paths[0], dataset.sample_rate)
            t1 = time.perf_counter()
            samples = audio_io.trim_silence(samples)
            t2 = time.perf_counter()
            samples = dataset._perturb(samples, rng)
            parts["decode"] += t1 - t0
            parts["trim"] += t2 - t1
            parts["perturb"] += time.perf_counter() - t2
            items.append((torch.from_numpy(samples), torch.tensor(utt.ids), i))
        t0 = time.perf_counter()
        collate(items)
        parts["collate"] += time.perf_counter() - t0
    print(", ".join(f"{k} {1000 * v / len(timed):.1f} ms" for k, v in parts.items()), "per batch, one thread")
    dataset.preload(threads=args.threads)
    for threads in (1, 2):
        dataset.threads = threads
        t0 = time.perf_counter()
        for indices in timed:
            collate(dataset.__getitems__(indices))
        ms = 1000 * (time.perf_counter() - t0) / len(timed)
        print(f"a batch from the audio cache (perturb + collate) on {threads} thread(s): {ms:.1f} ms")


def training_data(args: argparse.Namespace, data_dir: Path) -> tuple[AudioDataset, BucketingBatchSampler]:
    """The training set and sampler `jasper train` reads in epoch 1 (same seed, same draws)."""
    cfg = config.load(args.model_config)
    data_cfg = config.section(cfg, "input_train", "audio_dataset")
    tokenizer = Tokenizer(cfg["labels"])
    utts, _ = load_utterances([str(data_dir / "synth-train.json")], str(data_dir), tokenizer, data_cfg)
    dataset = AudioDataset(utts, data_cfg, args.seed, augment=True)
    dataset.set_epoch(1)
    sampler = BucketingBatchSampler(dataset.durations(), args.batch_size, seed=args.seed)
    sampler.set_epoch(1)
    return dataset, sampler


def bare_step_rate(
    args: argparse.Namespace, batches: list, audio_seconds: list[float], amp: bool, pad: bool = False
) -> float:
    cfg = config.load(args.model_config)
    torch.manual_seed(args.seed)
    model = Jasper.from_config(cfg).train()
    features = FilterbankFeatures(**config.section(cfg, "input_train", "filterbank_features")).train()
    optimizer = build_optimizer("adamw", model.parameters(), lr=1e-3, weight_decay=1e-3)
    blank = len(cfg["labels"])
    dtype = torch.bfloat16 if amp else None
    timed = 0.0
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        feats, feat_lens = features(batch.audio, batch.audio_lens)
        if pad:
            feats = graphs.pad_time(feats, graphs.bucket(feats.shape[-1]))
        with device_setup.autocast(torch.device("cpu"), dtype):
            log_probs, out_lens = model(feats, feat_lens)
            loss = ctc_loss(log_probs, out_lens, batch.targets, batch.target_lens, blank).mean()
        loss.item()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= args.warmup:
            timed += time.perf_counter() - start
    return sum(audio_seconds[args.warmup :]) / timed


def loop_rate(args: argparse.Namespace, data_dir: Path, amp: bool, flags: str) -> float:
    """`jasper train` as the quickstart runs it, no evaluation; audio-s/s by its own clock."""
    with tempfile.TemporaryDirectory() as out:
        log_file = Path(out) / "nvlog.json"
        cmd = [
            sys.executable, "-m", "jasper.cli", "train",
            "--model_config", args.model_config,
            "--dataset_dir", str(data_dir),
            "--train_manifests", str(data_dir / "synth-train.json"),
            "--val_manifests", str(data_dir / "synth-dev.json"),
            "--output_dir", out, "--log_file", str(log_file),
            "--batch_size", str(args.batch_size), "--epochs", "100", "--seed", str(args.seed),
            "--optimizer", "adamw", "--weight_decay", "1e-3", "--lr", "3e-3",
            "--threads", str(args.threads), "--num_workers", "1", "--device", "cpu",
            "--log_frequency", str(LOG_EVERY),
            "--eval_frequency", "100000", "--prediction_frequency", "100000",
            "--stop_after_steps", str(args.warmup + args.steps), "--ema", "0",
            *(["--amp"] if amp else []),
            *shlex.split(flags),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        records = [json.loads(line.removeprefix("DLLL ")) for line in log_file.read_text().splitlines()]
        steps = [r for r in records if r.get("type") == "LOG" and "train_audio_rate" in r.get("data", {})]
        # A record covers LOG_EVERY steps: audio = rate x mean step time x steps; the clock is the
        # job's own train_seconds, so everything between steps (logging, checks) counts.
        first, last = steps[args.warmup // LOG_EVERY - 1], steps[(args.warmup + args.steps) // LOG_EVERY - 1]
        timed = steps[args.warmup // LOG_EVERY : (args.warmup + args.steps) // LOG_EVERY]
        audio = sum(r["data"]["train_audio_rate"] * r["data"]["train_took"] * LOG_EVERY for r in timed)
        return audio / (last["train_seconds"] - first["train_seconds"])


if __name__ == "__main__":
    main()
